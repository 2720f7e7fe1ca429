//! The web console: static HTML, CSS and JavaScript embedded in the binary (`include_str!`), so
//! every node serves it with no build step and no file beside the binary. The API serves the
//! files (`bulwark-api`'s `console.rs`) without a token; every number the pages show comes from
//! the JSON API, asked with the token the operator signs in with.
//!
//! The pages load nothing from elsewhere: no CDN, no fonts, no inline script, which
//! [`CONTENT_SECURITY_POLICY`] enforces in the browser. Charts are a few SVG polylines drawn by
//! `chart.js` (no charting library: a time series of the last two minutes needs none).

/// One embedded file: its bytes and the `Content-Type` it is served with.
#[derive(Clone, Copy, Debug)]
pub struct Asset {
    pub body: &'static str,
    pub content_type: &'static str,
}

/// The page at `/`.
pub const INDEX: Asset = Asset {
    body: include_str!("../assets/index.html"),
    content_type: "text/html; charset=utf-8",
};

const JS: &str = "text/javascript; charset=utf-8";

/// The files under `/console/`, by name.
const FILES: [(&str, Asset); 8] = [
    (
        "console.css",
        Asset {
            body: include_str!("../assets/console.css"),
            content_type: "text/css; charset=utf-8",
        },
    ),
    ("app.js", js(include_str!("../assets/app.js"))),
    ("api.js", js(include_str!("../assets/api.js"))),
    ("cluster.js", js(include_str!("../assets/cluster.js"))),
    ("metrics.js", js(include_str!("../assets/metrics.js"))),
    ("chart.js", js(include_str!("../assets/chart.js"))),
    ("ledger.js", js(include_str!("../assets/ledger.js"))),
    ("admin.js", js(include_str!("../assets/admin.js"))),
];

const fn js(body: &'static str) -> Asset {
    Asset {
        body,
        content_type: JS,
    }
}

/// The file `/console/{name}` serves, if any.
pub fn asset(name: &str) -> Option<Asset> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
}

/// The policy every console answer carries: scripts, styles and requests only from this node,
/// nothing inline, no frames around it, no form posted anywhere. A token in sessionStorage is
/// only as safe as the page is from injected script; this is what keeps it so.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the pages load is embedded, and nothing is loaded from elsewhere.
    #[test]
    fn every_file_the_pages_name_is_served_and_none_is_external() {
        let mut sources: Vec<(&str, &str)> = vec![("index.html", INDEX.body)];
        sources.extend(FILES.iter().map(|(n, a)| (*n, a.body)));
        for (name, body) in sources {
            // The SVG namespace is a name, never fetched.
            let body = body.replace("'http://www.w3.org/2000/svg'", "");
            assert!(
                !body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"),
                "{name} names an external address"
            );
            assert!(!body.contains("<script>"), "{name}: an inline script");
            assert!(!body.contains(" style=\""), "{name}: an inline style");
            for (at, _) in body.match_indices("/console/") {
                let rest = &body[at + "/console/".len()..];
                let file: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                    .collect();
                assert!(asset(&file).is_some(), "{name} loads /console/{file}");
            }
            for (at, _) in body.match_indices("from './") {
                let rest = &body[at + "from './".len()..];
                let file = rest.split('\'').next().expect("a quoted module");
                assert!(asset(file).is_some(), "{name} imports ./{file}");
            }
        }
        assert!(asset("nope.js").is_none());
    }
}
