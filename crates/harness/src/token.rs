//! The admin token of a cluster the harness starts: one file, made once under the cluster's
//! root, given to every member (`--admin-token-file`; whichever registers it first makes it the
//! cluster's first admin token) and sent by the harness's own clients.

use std::path::{Path, PathBuf};

/// `dir/admin.token`, made with a new token if it does not exist; the path and the token.
pub fn admin_token(dir: &Path) -> std::io::Result<(PathBuf, String)> {
    let path = dir.join("admin.token");
    if !path.exists() {
        std::fs::create_dir_all(dir)?;
        let token = bulwark_token::generate();
        bulwark_fs::write_file_atomically(&path, format!("{}\n", token.text).as_bytes())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    let token = bulwark_token::read_file(&path)?;
    Ok((path, token))
}

/// The header every request of a client holding `token` carries.
pub fn bearer_headers(token: &str) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .expect("a token is plain ASCII");
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    headers
}
