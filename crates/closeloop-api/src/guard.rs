//! The one layer in front of every route: it enforces the route's [`Access`] (roles, and for a
//! credential limited to an org unit, whether the route serves one at all), refuses query
//! parameters the route does not take, and admits expensive requests through their class's
//! concurrency limit — all before the handler runs, so nothing is read from the body of a
//! request that is refused.
//!
//! On the HTML pages (`Route::html`) a request without an `Authorization` header is
//! identified by its session cookie instead ([`Sessions`]): it yields the very
//! [`Credential`] the token that signed in gave, so roles, org-unit scope and actor are the
//! same as with the token. Without a session a `GET` is sent to the sign-in page; a wrong
//! role gets a 403 page; and every form a session posts must carry the session's CSRF token,
//! checked here before the handler runs.

use std::sync::Arc;

use axum::body::{Body, HttpBody};
use axum::extract::{Query, Request, State};
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use closeloop_store::EventStore;
use futures::StreamExt;

use crate::AppState;
use crate::auth::Credential;
use crate::error::ApiError;
use crate::limits::{Class, Limiter, Permit};
use crate::pages::refusal::Refusal;
use crate::pages::session::{SESSION_COOKIE, Sessions, cookie};
use crate::pages::sign_in;
use crate::request_id::RequestId;
use crate::routes::{Access, Route};

/// What the guard of one route needs: the shared state and the route's entry in
/// [`ROUTES`](crate::ROUTES).
pub(crate) struct Guard<S> {
    state: Arc<AppState<S>>,
    route: &'static Route,
    /// The sessions of the pages, shared by every route of one router.
    sessions: Arc<Sessions>,
}

impl<S> Guard<S> {
    pub(crate) fn new(
        state: Arc<AppState<S>>,
        route: &'static Route,
        sessions: Arc<Sessions>,
    ) -> Self {
        Self {
            state,
            route,
            sessions,
        }
    }
}

impl<S> Clone for Guard<S> {
    fn clone(&self) -> Self {
        Self {
            state: Arc::clone(&self.state),
            route: self.route,
            sessions: Arc::clone(&self.sessions),
        }
    }
}

/// The middleware: admits the request or answers for the handler.
pub(crate) async fn guard<S: EventStore>(
    State(guard): State<Guard<S>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Guard {
        state,
        route,
        sessions,
    } = guard;
    if let Access::Roles(allowed) = route.access {
        let request_id = request.extensions().get::<RequestId>().cloned();
        let request_id = request_id.as_ref();
        // A page asked for without a token: the session cookie says who is calling.
        let signed_in = if route.html && !request.headers().contains_key(AUTHORIZATION) {
            let now = (state.clock)();
            match cookie(request.headers(), SESSION_COOKIE).and_then(|id| sessions.find(id, now)) {
                Some(signed_in) => Some(signed_in),
                None => return sign_in::needed(&state.site, &request, request_id),
            }
        } else {
            None
        };
        let refuse = |err: ApiError| {
            if route.html {
                Refusal::of(&err).page(&state.site, signed_in.as_ref(), request_id)
            } else {
                err.into_response()
            }
        };
        let credential = match &signed_in {
            Some(signed_in) => signed_in.credential.clone(),
            None => match Credential::from_headers(&state.tokens, request.headers()) {
                Ok(credential) => credential,
                Err(err) => return refuse(err),
            },
        };
        if !credential.may(allowed) {
            if route.html {
                return sign_in::wrong_role(
                    &state.site,
                    signed_in.as_ref(),
                    &credential,
                    route,
                    request_id,
                );
            }
            return forbidden(&credential, route).into_response();
        }
        if let Some(scope) = &credential.org_unit
            && !route.scoped
        {
            return refuse(ApiError::NeedsUnscoped {
                scope: scope.as_str().to_owned(),
                method: route.method,
                path: route.path,
            });
        }
        if let Some(signed_in) = &signed_in
            && request.method() == Method::POST
        {
            request = match sign_in::check_csrf(request, signed_in, &state.site, request_id).await {
                Ok(request) => request,
                Err(refused) => return refused,
            };
        }
        request.extensions_mut().insert(credential);
        if let Some(signed_in) = signed_in {
            request.extensions_mut().insert(signed_in);
        }
    }
    if route.html {
        request.extensions_mut().insert(sessions);
    }
    if route.strict_query()
        && let Err(err) = check_query(route, request.uri())
    {
        return err.into_response();
    }
    let Some(class) = route.class else {
        return next.run(request).await;
    };
    let admission = Admission {
        route,
        class,
        limiter: state.limits.of(class).clone(),
    };
    if class.admitted_by_handler() {
        request.extensions_mut().insert(admission);
        return next.run(request).await;
    }
    let permit = match admission.admit().await {
        Ok(permit) => permit,
        Err(err) => return err.into_response(),
    };
    let response = next.run(request).await;
    // A streamed answer (the event export) is still working while its body is sent: its
    // turn is given back only when the body ends or the client goes away. An answer already
    // complete (its size known) gives the turn back now and keeps its Content-Length.
    if response.body().size_hint().exact().is_some() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _turn = &permit;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// A request's way to its turn in its class's concurrency limit. The guard uses it, or, for
/// a class [admitted by the handler](crate::limits::Class::admitted_by_handler), hands it to
/// the handler as a request extension.
#[derive(Clone)]
pub(crate) struct Admission {
    route: &'static Route,
    class: Class,
    limiter: Limiter,
}

impl Admission {
    /// A turn, after waiting in line if the line has room.
    ///
    /// # Errors
    /// [`ApiError::Busy`] (503 with `Retry-After`) when the line is full: the request is shed.
    pub(crate) async fn admit(&self) -> Result<Permit, ApiError> {
        if let Some(permit) = self.limiter.acquire().await {
            return Ok(permit);
        }
        metrics::counter!("closeloop_http_shed_total", "route" => self.route.path).increment(1);
        tracing::warn!(
            route = self.route.path,
            "shed: too many requests of this kind"
        );
        Err(ApiError::Busy {
            class: self.class.describe(),
            retry_after: self.limiter.limit().retry_after,
        })
    }
}

fn forbidden(credential: &Credential, route: &'static Route) -> ApiError {
    let allowed = route
        .access
        .roles()
        .unwrap_or_default()
        .iter()
        .map(|role| role.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    ApiError::Forbidden {
        role: credential.role,
        method: route.method,
        path: route.path,
        allowed,
    }
}

/// Refuses a query parameter the route does not take, naming the ones it does.
fn check_query(route: &Route, uri: &axum::http::Uri) -> Result<(), ApiError> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri).map_err(|_| {
        ApiError::InvalidRequest(
            "the query string cannot be read: use name=value pairs joined by &, percent-encoded UTF-8".to_owned(),
        )
    })?;
    let Some((unknown, _)) = pairs
        .iter()
        .find(|(name, _)| !route.query.contains(&name.as_str()))
    else {
        return Ok(());
    };
    let accepted = if route.query.is_empty() {
        "it takes none".to_owned()
    } else {
        format!("it takes {}", route.query.join(", "))
    };
    Err(ApiError::InvalidRequest(format!(
        "unknown query parameter {unknown:?} for {} {}: {accepted}",
        route.method, route.path
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::find;

    #[test]
    fn unknown_parameters_are_named_with_the_accepted_ones() {
        let verify = find("GET", "/v1/audit/verify").unwrap();
        let err = check_query(
            verify,
            &"/v1/audit/verify?upto=3&utm_source=x".parse().unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("\"utm_source\"") && err.contains("upto"),
            "{err}"
        );
        assert!(check_query(verify, &"/v1/audit/verify?upto=3".parse().unwrap()).is_ok());
        let feedback = find("POST", "/v1/feedback").unwrap();
        let err = check_query(feedback, &"/v1/feedback?x=1".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("takes none"), "{err}");
    }
}
