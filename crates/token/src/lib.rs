//! The text of an API token: `bulwark_<id: 16 hex>_<secret: 64 hex>`, how one is drawn, and how
//! a presented one is checked against the hash the cluster stores (`ledger::access` keeps only
//! the SHA-256 of the secret). The one copy of the format, for the node, the CLI and the
//! harness. Secrets are 256 random bits, so a single fast hash is enough (there is nothing to
//! brute-force), and hashes are compared in constant time.

const PREFIX: &str = "bulwark_";

/// A new token: its id, the hash the cluster stores, and the text only its holder ever sees.
pub struct NewToken {
    pub id: u64,
    pub secret_hash: [u8; 32],
    pub text: String,
}

/// Draws a new token from the operating system's random source.
pub fn generate() -> NewToken {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rng.fill(&mut id).expect("the system random source works");
    rng.fill(&mut secret)
        .expect("the system random source works");
    let id = u64::from_be_bytes(id);
    let secret_hex = hex(&secret);
    NewToken {
        id,
        secret_hash: hash_secret(&secret_hex),
        text: format!("{PREFIX}{id:016x}_{secret_hex}"),
    }
}

/// The id and the secret's hash of a token's text; `None` if it is not shaped like one.
pub fn parse(text: &str) -> Option<(u64, [u8; 32])> {
    let rest = text.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let plain_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if id.len() != 16 || secret.len() != 64 || !plain_hex(id) || !plain_hex(secret) {
        return None;
    }
    let id = u64::from_str_radix(id, 16).ok()?;
    Some((id, hash_secret(secret)))
}

/// Whether a presented secret's hash is the stored one, in time independent of where they differ.
pub fn hashes_match(stored: &[u8; 32], presented: &[u8; 32]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(&stored[..], &presented[..]))
}

fn hash_secret(secret_hex: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret_hex.as_bytes());
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a token from a file (its first line, trimmed): what `--admin-token-file`, the CLI's
/// `--token-file` and the harness read.
pub fn read_file(path: &std::path::Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if parse(&token).is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} does not hold a Bulwark token (bulwark_<16 hex>_<64 hex>)",
                path.display()
            ),
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_back_to_its_id_and_hash() {
        let t = generate();
        assert_eq!(parse(&t.text), Some((t.id, t.secret_hash)));
        assert_ne!(generate().text, t.text);
        let longer = format!("{}0", t.text);
        for bad in [
            "",
            "bulwark_",
            &t.text[1..],
            &t.text.to_uppercase(),
            &longer,
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn hashes_match_only_when_equal() {
        let (a, b) = (generate(), generate());
        assert!(hashes_match(&a.secret_hash, &a.secret_hash));
        assert!(!hashes_match(&a.secret_hash, &b.secret_hash));
    }
}
