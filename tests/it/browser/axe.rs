//! Accessibility checks with axe-core, vendored in `tests/browser/axe-core/` (MPL-2.0; refresh
//! it with `tests/browser/refresh-axe-core`).

use std::fmt;

use fantoccini::Client;
use serde::Deserialize;

/// axe-core's minified source, injected into each page checked.
const AXE_SOURCE: &str = include_str!("../../browser/axe-core/axe.min.js");
/// The vendored axe-core's version.
pub const AXE_VERSION: &str = include_str!("../../browser/axe-core/VERSION");

/// The rules run: WCAG 2.0, 2.1 and 2.2, levels A and AA.
const WCAG_22_AA: &[&str] = &[
    "wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa",
];

/// Runs axe on the page, resolving with its violations in brief (as JSON text, so nothing is
/// lost to WebDriver's conversion of values).
const RUN: &str = r#"
const [tags, done] = arguments;
axe.run(document, {runOnly: {type: "tag", values: tags}, resultTypes: ["violations"]})
  .then(results => done(JSON.stringify(results.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map(n => n.target.join(" ")).slice(0, 5),
    count: v.nodes.length,
  })))))
  .catch(err => done(JSON.stringify({error: String(err)})));
"#;

/// A rule the page breaks, where.
#[derive(Debug, Deserialize)]
pub struct Violation {
    /// The rule's id, e.g. `color-contrast`.
    pub id: String,
    /// `minor`, `moderate`, `serious` or `critical`.
    pub impact: Option<String>,
    /// What the rule asks for.
    pub help: String,
    /// Selectors of up to five elements that break it.
    pub nodes: Vec<String>,
    /// How many elements break it.
    pub count: usize,
}

impl Violation {
    /// Whether it fails the test: serious and critical violations do.
    pub fn fails(&self) -> bool {
        matches!(self.impact.as_deref(), Some("serious" | "critical"))
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {}: {} ({} element(s), e.g. {})",
            self.impact.as_deref().unwrap_or("unknown"),
            self.id,
            self.help,
            self.count,
            self.nodes.join(", ")
        )
    }
}

/// The WCAG 2.2 AA violations axe finds on the page open in `client`.
///
/// # Panics
/// When axe cannot be injected or fails to run.
pub async fn violations(client: &Client) -> Vec<Violation> {
    // Pages forbid scripts of their own (Content-Security-Policy); WebDriver's are not theirs.
    client
        .execute(AXE_SOURCE, vec![])
        .await
        .expect("inject axe-core");
    let tags: Vec<serde_json::Value> = WCAG_22_AA.iter().map(|&tag| tag.into()).collect();
    let answer = client
        .execute_async(RUN, vec![tags.into()])
        .await
        .expect("run axe-core");
    let text = answer.as_str().expect("axe's answer is JSON text");
    serde_json::from_str(text).unwrap_or_else(|_| panic!("axe-core failed: {text}"))
}
