//! File replacement that survives a crash at any instant: write a temporary file, fsync it,
//! rename it over the old one, fsync the directory (so the rename itself is durable).

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes`: after a crash the file holds either the old or the new bytes.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp_name = path.file_name().unwrap_or_default().to_os_string();
    temp_name.push(".tmp");
    let temp = dir.join(temp_name);
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
