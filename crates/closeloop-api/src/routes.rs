//! [`ROUTES`]: every route the service serves, with who may use it, the query parameters it
//! takes and the concurrency class it belongs to. The router, the guard that enforces access,
//! the OpenAPI document and the tests are all built from this one table, so they cannot drift
//! apart.

use crate::auth::{ADMINS, AUDITORS, LEADERS, READERS, Role, WRITERS};
use crate::limits::Class;

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token.
    Public,
    /// A credential with one of these roles; admin may use every route.
    Roles(&'static [Role]),
}

impl Access {
    /// The roles that may use the route, admin included; `None` for a public one.
    #[must_use]
    pub fn roles(self) -> Option<Vec<Role>> {
        match self {
            Access::Public => None,
            Access::Roles(roles) => {
                let mut all = roles.to_vec();
                if !all.contains(&Role::Admin) {
                    all.push(Role::Admin);
                }
                Some(all)
            }
        }
    }
}

/// One route of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The HTTP method, upper case.
    pub method: &'static str,
    /// The path template, e.g. `/v1/loops/{loop_id}`.
    pub path: &'static str,
    /// Who may use it.
    pub access: Access,
    /// The query parameters it takes. On `/v1` routes any other is refused with 400
    /// `invalid_request`; other routes (health checks, metrics, HTML pages) ignore unknown
    /// ones, as pages linked with `utm_source` and the like must keep working.
    pub query: &'static [&'static str],
    /// The concurrency limit it counts against, for the expensive ones.
    pub class: Option<Class>,
    /// Whether it answers HTML, errors included (a page for people, not the JSON API).
    pub html: bool,
    /// Whether it serves a credential limited to an org unit, cutting its answer to that
    /// subtree itself (loops outside answer 404 `unknown_loop`, lists and stats leave them
    /// out). Every other route that needs a token answers such a credential 403 `forbidden`:
    /// a route is closed to scoped credentials until it is made to respect their scope.
    pub scoped: bool,
}

impl Route {
    const fn new(method: &'static str, path: &'static str, access: Access) -> Self {
        Self {
            method,
            path,
            access,
            query: &[],
            class: None,
            html: false,
            scoped: false,
        }
    }

    const fn query(mut self, query: &'static [&'static str]) -> Self {
        self.query = query;
        self
    }

    const fn class(mut self, class: Class) -> Self {
        self.class = Some(class);
        self
    }

    const fn html(mut self) -> Self {
        self.html = true;
        self
    }

    const fn scoped(mut self) -> Self {
        self.scoped = true;
        self
    }

    /// Whether unknown query parameters are refused: on every route of the `/v1` API.
    #[must_use]
    pub fn strict_query(&self) -> bool {
        self.path.starts_with("/v1/") && !self.html
    }
}

use Access::{Public, Roles};

/// Query parameters of the loop list (the API's, and the staff queue's filters).
pub(crate) const LOOP_FILTERS: &[&str] = &[
    "status",
    "stage",
    "org_unit",
    "theme",
    "channel",
    "seldom_heard",
    "overdue",
    "limit",
    "cursor",
];

/// Every route the service serves (contract §3, plus the operators' endpoints).
pub const ROUTES: &[Route] = &[
    Route::new("GET", "/healthz", Public),
    Route::new("GET", "/readyz", Public),
    Route::new("GET", "/metrics", Public),
    Route::new("GET", "/v1/openapi.json", Public),
    Route::new("GET", "/assets/{file}", Public),
    Route::new("GET", "/assets/images/{file}", Public),
    Route::new("GET", "/you-said-we-did", Public)
        .query(&["place", "theme", "limit", "cursor"])
        .class(Class::Public)
        .html(),
    Route::new("GET", "/you-said-we-did/print", Public)
        .query(&["place", "theme"])
        .class(Class::Public)
        .html(),
    Route::new("GET", "/you-said-we-did/feed.atom", Public)
        .query(&["place", "theme"])
        .class(Class::Public),
    Route::new("GET", "/you-said-we-did/snippet", Public)
        .query(&["place", "theme", "limit"])
        .class(Class::Public),
    Route::new("GET", "/v1/you-said-we-did", Public)
        .query(&["place", "theme", "limit", "cursor"])
        .class(Class::Public),
    Route::new("GET", "/insights", Roles(LEADERS))
        .query(&["place", "theme", "period"])
        .html()
        .scoped(),
    Route::new("POST", "/v1/feedback", Roles(WRITERS)).scoped(),
    Route::new("GET", "/v1/loops", Roles(READERS))
        .query(LOOP_FILTERS)
        .scoped(),
    Route::new("GET", "/v1/loops/{loop_id}", Roles(READERS)).scoped(),
    Route::new(
        "POST",
        "/v1/loops/{loop_id}/acknowledgements",
        Roles(WRITERS),
    )
    .scoped(),
    Route::new("POST", "/v1/loops/{loop_id}/responses", Roles(WRITERS)).scoped(),
    Route::new("POST", "/v1/loops/{loop_id}/actions", Roles(WRITERS)).scoped(),
    Route::new("POST", "/v1/loops/{loop_id}/changes", Roles(WRITERS)).scoped(),
    Route::new("POST", "/v1/loops/{loop_id}/no-change", Roles(WRITERS)).scoped(),
    Route::new("POST", "/v1/loops/{loop_id}/report-backs", Roles(WRITERS)).scoped(),
    Route::new("POST", "/v1/loops/{loop_id}/reopenings", Roles(WRITERS)).scoped(),
    Route::new(
        "POST",
        "/v1/loops/{loop_id}/story-approvals",
        Roles(WRITERS),
    )
    .scoped(),
    Route::new("POST", "/v1/changes", Roles(WRITERS)).scoped(),
    Route::new("GET", "/v1/stats", Roles(READERS))
        .query(&["group_by", "from", "to"])
        .scoped(),
    Route::new("GET", "/v1/events", Roles(AUDITORS))
        .query(&["after", "limit"])
        .class(Class::Export),
    Route::new("GET", "/v1/audit/verify", Roles(AUDITORS))
        .query(&["upto"])
        .class(Class::Verify),
    Route::new("GET", "/v1/audit/proof/inclusion", Roles(AUDITORS))
        .query(&["position", "upto"])
        .class(Class::Proof),
    Route::new("GET", "/v1/audit/proof/consistency", Roles(AUDITORS))
        .query(&["from", "upto"])
        .class(Class::Proof),
    Route::new("GET", "/v1/audit/access", Roles(AUDITORS))
        .query(&["loop_id", "actor", "after", "limit"])
        .class(Class::AccessLog),
    Route::new("GET", "/v1/dead-letters", Roles(ADMINS)).query(&["after", "limit"]),
    Route::new("POST", "/v1/dead-letters/{seq}/retry", Roles(ADMINS)),
    Route::new("POST", "/v1/erasures", Roles(ADMINS)),
    // Signing in to the pages, and the staff work queue (`pages::sign_in`, `pages::staff`).
    Route::new("GET", "/sign-in", Public)
        .query(&["next", "notice"])
        .html(),
    Route::new("POST", "/sign-in", Public).html(),
    Route::new("POST", "/sign-out", Roles(READERS))
        .html()
        .scoped(),
    Route::new("GET", "/staff", Roles(WRITERS))
        .query(crate::pages::staff::queue::QUERY)
        .html()
        .scoped(),
    Route::new("POST", "/staff/changes", Roles(WRITERS))
        .html()
        .scoped(),
    Route::new("GET", "/staff/loops/{loop_id}", Roles(WRITERS))
        .query(&["done"])
        .html()
        .scoped(),
    Route::new("POST", "/staff/loops/{loop_id}/{step}", Roles(WRITERS))
        .html()
        .scoped(),
];

/// The route serving `method` on the path template `path`, if any.
#[must_use]
pub fn find(method: &str, path: &str) -> Option<&'static Route> {
    ROUTES
        .iter()
        .find(|route| route.method == method && route.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_is_listed_once() {
        for (i, route) in ROUTES.iter().enumerate() {
            assert!(
                ROUTES[..i]
                    .iter()
                    .all(|other| (other.method, other.path) != (route.method, route.path)),
                "{} {} is listed twice",
                route.method,
                route.path
            );
        }
    }

    /// One row of the route table of `docs/api.md`: method, path, roles (or "public"), query
    /// parameters, and what a scoped credential gets.
    type Row = (String, String, String, String, String);

    /// The route table of `docs/api.md`.
    fn documented_routes() -> Vec<Row> {
        let doc = include_str!("../../../docs/api.md");
        let words = |cell: &str| {
            cell.split(',')
                .map(|word| word.trim().trim_matches('`'))
                .filter(|word| !word.is_empty() && *word != "—")
                .collect::<Vec<_>>()
                .join(",")
        };
        doc.lines()
            .filter(|line| line.starts_with("| `GET` |") || line.starts_with("| `POST` |"))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                (
                    cells[1].trim_matches('`').to_owned(),
                    cells[2].trim_matches('`').to_owned(),
                    words(cells[3]),
                    words(cells[4]),
                    cells[6].to_owned(),
                )
            })
            .collect()
    }

    /// What the route table of `docs/api.md` says a scoped credential gets from `route`.
    fn scope_column(route: &Route) -> &'static str {
        match (route.access, route.scoped) {
            (Access::Public, _) => "—",
            (Access::Roles(_), true) => "its subtree",
            (Access::Roles(_), false) => "403",
        }
    }

    #[test]
    fn the_documented_route_table_is_the_served_one() {
        let mut served: Vec<Row> = ROUTES
            .iter()
            .map(|route| {
                let roles = route.access.roles().map_or_else(
                    || "public".to_owned(),
                    |roles| {
                        roles
                            .iter()
                            .map(|role| role.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    },
                );
                (
                    route.method.to_owned(),
                    route.path.to_owned(),
                    roles,
                    route.query.join(","),
                    scope_column(route).to_owned(),
                )
            })
            .collect();
        let mut documented = documented_routes();
        served.sort();
        documented.sort();
        assert_eq!(documented, served, "docs/api.md disagrees with ROUTES");
    }

    #[test]
    fn admin_is_in_every_role_set() {
        for route in ROUTES {
            if let Some(roles) = route.access.roles() {
                assert!(roles.contains(&Role::Admin), "{}", route.path);
            }
        }
    }
}
