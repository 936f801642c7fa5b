//! The shared small-file cases: a store folder in the `<file_id>/<file_name>` layout, an FE
//! `image/VERSION` file with the cluster token, and `requests.tsv` with the expected responses.

use std::path::{Path, PathBuf};

/// Returns the cases folder, beside the crate.
pub fn cases_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/cases"))
        .canonicalize()
        .expect("the shared cases folder ../shared/cases beside the crate is missing")
}

/// Returns the case store folder (`files/`), absolute.
pub fn files_dir() -> PathBuf {
    cases_dir().join("files")
}

/// Returns the FE `image/VERSION` file of the cases, absolute.
pub fn version_file() -> PathBuf {
    cases_dir().join("version").join("VERSION")
}

/// Returns the cluster token of the cases, read from the `token=` line of [`version_file`].
pub fn token() -> String {
    let path = version_file();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .find_map(|line| line.trim().strip_prefix("token="))
        .map(|token| token.trim().to_string())
        .unwrap_or_else(|| panic!("{} has no token= line", path.display()))
}

/// One file of a store folder: its id, its name and its exact bytes.
#[derive(Debug, Clone)]
pub struct CaseFile {
    pub id: i64,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Reads the one file under `<store>/<id>/`; panics unless there is exactly one.
pub fn read_store_file(store: &Path, id: i64) -> CaseFile {
    let folder = store.join(id.to_string());
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", folder.display()))
        .map(|entry| entry.expect("unreadable folder entry").path())
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "{} must hold exactly one file, found {entries:?}",
        folder.display()
    );
    let path = entries.remove(0);
    let name = path
        .file_name()
        .expect("file without a name")
        .to_string_lossy()
        .into_owned();
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    CaseFile { id, name, bytes }
}

/// Writes `file` into the store folder `store` as `<id>/<name>`.
pub fn write_store_file(store: &Path, file: &CaseFile) {
    let folder = store.join(file.id.to_string());
    std::fs::create_dir_all(&folder)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", folder.display()));
    let path = folder.join(&file.name);
    std::fs::write(&path, &file.bytes)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Reads case file `id` from [`files_dir`].
pub fn case_file(id: i64) -> CaseFile {
    read_store_file(&files_dir(), id)
}

/// What a case expects in the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The exact bytes of case file `<id>` with its `Content-Disposition`.
    File(i64),
    /// This exact JSON body.
    Json(String),
    /// Forwarded to the FE, whose own response comes back.
    Fe,
}

/// One line of `requests.tsv`.
#[derive(Debug, Clone)]
pub struct RequestCase {
    /// Line number in the file, 1 being the header line.
    pub line: usize,
    pub method: String,
    /// Path and query, to be sent exactly as written.
    pub target: String,
    /// The expected status, `None` where the file has `-` (whatever the FE sends).
    pub status: Option<u16>,
    pub expect: Expect,
    pub why: String,
}

/// Reads and parses every case of `requests.tsv`; panics on a malformed line.
pub fn request_cases() -> Vec<RequestCase> {
    let path = cases_dir().join("requests.tsv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut cases = Vec::new();
    for (index, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let line_number = index + 1;
        let columns: Vec<&str> = line.split('\t').collect();
        assert_eq!(
            columns.len(),
            5,
            "requests.tsv line {line_number} has {} columns, expected 5: {line:?}",
            columns.len()
        );
        let status = match columns[2] {
            "-" => None,
            code => Some(code.parse().unwrap_or_else(|_| {
                panic!("requests.tsv line {line_number}: invalid status {code:?}")
            })),
        };
        let expect = if let Some(id) = columns[3].strip_prefix("file:") {
            Expect::File(id.parse().unwrap_or_else(|_| {
                panic!("requests.tsv line {line_number}: invalid file id {id:?}")
            }))
        } else if let Some(body) = columns[3].strip_prefix("json:") {
            Expect::Json(body.to_string())
        } else if columns[3] == "fe" {
            Expect::Fe
        } else {
            panic!(
                "requests.tsv line {line_number}: unknown expect {:?}",
                columns[3]
            );
        };
        cases.push(RequestCase {
            line: line_number,
            method: columns[0].to_string(),
            target: columns[1].to_string(),
            status,
            expect,
            why: columns[4].to_string(),
        });
    }
    assert!(!cases.is_empty(), "{} has no cases", path.display());
    cases
}
