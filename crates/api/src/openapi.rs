//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of every public route of API v1
//! (`crates/api/openapi.json`, checked in and embedded here), for generating clients in other
//! languages.
//!
//! It is checked three ways: the tests below (the document is structurally OpenAPI 3.1, its
//! paths are exactly the routes `lib.rs` builds its router with, and each operation names the
//! role `auth::required_role` demands), and `crates/bulwark/tests/openapi.rs`, which drives every
//! operation of a real node and validates each answer against the document's schema for it.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// Served without a token (`auth::required_role`): it is public documentation of the API, the
/// same for every node, and tells nothing of the ledger or the cluster.
pub(crate) async fn document() -> Response {
    let mut response = DOCUMENT.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use axum::http::Method;
    use bulwark_ledger::access::Role;
    use serde_json::Value;

    use super::DOCUMENT;

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    /// Every operation: (path, method, operation).
    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let paths = doc["paths"].as_object().expect("paths is an object");
        let mut found = Vec::new();
        for (path, item) in paths {
            let item = item.as_object().expect("a path item is an object");
            for (key, operation) in item {
                assert!(
                    METHODS.contains(&key.as_str()) || key == "parameters" || key == "summary",
                    "{path}: unexpected key {key}"
                );
                if METHODS.contains(&key.as_str()) {
                    found.push((path.clone(), key.clone(), operation.clone()));
                }
            }
        }
        found
    }

    /// The routes `lib.rs` builds its router with, as (path, method), read from its source: every
    /// `.route("path", method(handler).method(handler))`, so a route added there is seen here
    /// with nothing else to update. (`internal.rs` builds the peer router, which is not public.)
    fn router_routes() -> BTreeSet<(String, String)> {
        let source = include_str!("lib.rs");
        // Routes that come another way than `.route(` would not be seen here.
        for other in [".nest(", ".merge(", ".route_service(", ".nest_service("] {
            assert!(
                !source.contains(other),
                "lib.rs calls {other}: read its routes here too, and put them in openapi.json"
            );
        }
        let mut routes = BTreeSet::new();
        for (at, _) in source.match_indices(".route(") {
            let rest = &source[at + ".route(".len()..];
            // The call's arguments, up to its closing parenthesis.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find_map(|(i, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    (depth == 0).then_some(i)
                })
                .expect("a route call closes");
            let call = &rest[..end];
            let path = call
                .split('"')
                .nth(1)
                .expect("a route's first argument is a string literal");
            let handlers = &call[call.find(',').expect("a route has a handler")..];
            let mut methods = 0;
            for method in METHODS {
                let named = |prefix: &str| handlers.contains(&format!("{prefix}{method}("));
                if named(" ") || named(".") || named("\n") || named("(") {
                    routes.insert((path.to_string(), method.to_string()));
                    methods += 1;
                }
            }
            assert!(methods > 0, "no method found for route {path}: {call}");
        }
        assert!(
            routes.len() > 20,
            "lib.rs's routes were not found: {routes:?}"
        );
        routes
    }

    #[test]
    fn the_document_describes_exactly_the_routes_the_router_serves() {
        let doc = document();
        let documented: BTreeSet<(String, String)> = operations(&doc)
            .into_iter()
            .map(|(path, method, _)| (path, method))
            .collect();
        let served = router_routes();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "served but not in openapi.json: {undocumented:?}; in openapi.json but not served: \
             {unserved:?}"
        );
        assert!(served.contains(&("/v1/openapi.json".to_string(), "get".to_string())));
    }

    /// The role each operation names (`security` and `x-bulwark-role`) is the one the API asks.
    #[test]
    fn each_operation_names_the_role_the_api_demands() {
        let doc = document();
        for (path, method, operation) in operations(&doc) {
            // A path as a client sends it: each `{param}` given a value of its pattern.
            let concrete = path
                .replace("/tokens/{id}", "/tokens/00000000000000ab")
                .replace("{id}", "1")
                .replace("{file}", "app.js");
            assert!(!concrete.contains('{'), "{path}: fill its parameters");
            let method_upper =
                Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let demanded = crate::auth::required_role(&method_upper, &concrete);
            let named = operation["x-bulwark-role"]
                .as_str()
                .expect("x-bulwark-role");
            let security = operation["security"].as_array().expect("security");
            let expected = match demanded {
                None => "none",
                Some(Role::Read) => "read",
                Some(Role::Write) => "write",
                Some(Role::Admin) => "admin",
            };
            assert_eq!(named, expected, "{method} {path}: x-bulwark-role");
            if demanded.is_none() {
                assert!(security.is_empty(), "{method} {path}: public, security: []");
                assert!(
                    operation["responses"].get("401").is_none(),
                    "{method} {path}: a public route never answers 401"
                );
            } else {
                assert_eq!(
                    security,
                    &vec![serde_json::json!({ "bearer": [expected] })],
                    "{method} {path}: security"
                );
                for status in ["401", "429", "503"] {
                    assert!(
                        operation["responses"].get(status).is_some(),
                        "{method} {path}: a route with a token documents {status}"
                    );
                }
                assert_eq!(
                    operation["responses"].get("403").is_some(),
                    demanded != Some(Role::Read),
                    "{method} {path}: 403 is documented where a valid token may lack the role"
                );
            }
        }
    }

    /// Resolves a local `$ref` (`#/a/b~1c`) in `doc`.
    fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        doc.pointer(pointer)
    }

    /// Every `$ref` in `value`, with where it is.
    fn refs(value: &Value, at: String, found: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    if key == "$ref" {
                        found.push((at.clone(), inner.as_str().unwrap_or("").to_string()));
                    } else {
                        refs(inner, format!("{at}/{key}"), found);
                    }
                }
            }
            Value::Array(items) => {
                for (i, inner) in items.iter().enumerate() {
                    refs(inner, format!("{at}/{i}"), found);
                }
            }
            _ => {}
        }
    }

    /// Structurally OpenAPI 3.1: the version, `info`, every `$ref` resolving (to the kind of
    /// component its place needs), every operation with a unique `operationId` and responses
    /// with descriptions, every path parameter declared, every security scheme defined.
    #[test]
    fn the_document_is_structurally_openapi_3_1() {
        let doc = document();
        let version = doc["openapi"].as_str().expect("openapi");
        let parts: Vec<&str> = version.split('.').collect();
        assert!(
            parts.len() == 3
                && parts[..2] == ["3", "1"]
                && parts[2].bytes().all(|b| b.is_ascii_digit()),
            "openapi: {version}"
        );
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

        let mut found = Vec::new();
        refs(&doc, String::new(), &mut found);
        assert!(found.len() > 100, "{} refs", found.len());
        for (at, reference) in &found {
            assert!(
                reference.starts_with("#/components/"),
                "{at}: {reference} is not a local component"
            );
            assert!(
                resolve(&doc, reference).is_some(),
                "{at}: {reference} does not resolve"
            );
            // A response's $ref names a response, a parameter's a parameter, and so on.
            let kind = reference.split('/').nth(2).expect("a component kind");
            let place_ok = match kind {
                "responses" => at.contains("/responses/"),
                "parameters" => at.contains("/parameters/"),
                "headers" => at.contains("/headers/"),
                "schemas" => at.starts_with("/components/schemas/") || at.contains("/schema"),
                _ => false,
            };
            assert!(place_ok, "{at}: a {kind} $ref in the wrong place");
        }

        let schemes: BTreeSet<String> = doc["components"]["securitySchemes"]
            .as_object()
            .expect("security schemes")
            .keys()
            .cloned()
            .collect();
        let mut ids = BTreeMap::new();
        for (path, method, operation) in operations(&doc) {
            let what = format!("{method} {path}");
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no operationId"));
            if let Some(other) = ids.insert(id.to_string(), what.clone()) {
                panic!("operationId {id} of {what} is also {other}'s");
            }
            let responses = operation["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{what}: no responses"));
            assert!(!responses.is_empty(), "{what}: no responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{what}: no 2xx answer"
            );
            for (status, response) in responses {
                let valid = status == "default"
                    || (status.len() == 3
                        && (status.bytes().all(|b| b.is_ascii_digit()) || status.ends_with("XX")));
                assert!(valid, "{what}: status key {status}");
                let response = match response.get("$ref") {
                    Some(r) => {
                        resolve(&doc, r.as_str().expect("a $ref is a string")).expect("resolves")
                    }
                    None => response,
                };
                assert!(
                    response["description"].is_string(),
                    "{what} {status}: a response needs a description"
                );
            }
            for requirement in operation["security"].as_array().expect("security") {
                for scheme in requirement.as_object().expect("a requirement").keys() {
                    assert!(schemes.contains(scheme), "{what}: unknown scheme {scheme}");
                }
            }
            // Every `{param}` of the path is a required path parameter, and no other is.
            let declared: BTreeSet<String> = operation["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| match p.get("$ref") {
                            Some(r) => resolve(&doc, r.as_str().expect("$ref")).expect("resolves"),
                            None => p,
                        })
                        .filter(|p| p["in"] == "path")
                        .inspect(|p| assert_eq!(p["required"], true, "{what}: {p}"))
                        .map(|p| p["name"].as_str().expect("a name").to_string())
                        .collect()
                })
                .unwrap_or_default();
            let in_path: BTreeSet<String> = path
                .split('{')
                .skip(1)
                .map(|s| s.split('}').next().expect("a closing brace").to_string())
                .collect();
            assert_eq!(declared, in_path, "{what}: path parameters");
        }
    }
}
