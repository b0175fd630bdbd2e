//! Discovery: the part of `stack/` that touches the filesystem. It finds the project root,
//! lists and selects stacks, and reads the project file, the stack file and the agents'
//! workspace folders into memory, so that validation (`validate.rs`) stays pure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::diag::{Diagnostic, Source};
use super::{PROJECT_FILE, STACKS_DIR, StackError};
use crate::env::{Env, vars};

/// A located project: its root and the stack selected for this run.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub stack: String,
}

impl Project {
    /// Find the project from `start` upwards, and pick the stack: `--stack` beats
    /// `AGENT_ARMY_STACK` beats `default_stack` in the project file.
    pub fn locate(start: &Path, flag: Option<&str>, env: &Env) -> Result<Project, StackError> {
        let root = find_root(start)?;
        let stack = match flag.or_else(|| env.get(vars::STACK)) {
            Some(s) => s.to_string(),
            None => default_stack(&root)?.ok_or_else(|| StackError::NoStack {
                available: available_stacks(&root),
            })?,
        };
        // The name becomes a path (`stacks/<name>.toml`, state files) and part of every
        // hostname: checked before any file is looked at.
        if let Err(e) = crate::naming::check_dns_label(&stack) {
            return Err(StackError::BadStackName {
                available: available_stacks(&root),
                reason: e.to_string(),
                name: stack,
            });
        }
        Ok(Project { root, stack })
    }

    pub fn stack_file(&self) -> PathBuf {
        self.root
            .join(STACKS_DIR)
            .join(format!("{}.toml", self.stack))
    }

    /// The stack file path as shown to users (relative to the project root).
    pub fn stack_file_display(&self) -> PathBuf {
        Path::new(STACKS_DIR).join(format!("{}.toml", self.stack))
    }
}

/// The project root: the nearest folder from `start` upwards holding the project file.
pub fn find_root(start: &Path) -> Result<PathBuf, StackError> {
    let mut dir = Some(start);
    while let Some(d) = dir {
        if d.join(PROJECT_FILE).is_file() {
            return Ok(d.to_path_buf());
        }
        dir = d.parent();
    }
    Err(StackError::NoProject(start.to_path_buf()))
}

fn default_stack(root: &Path) -> Result<Option<String>, StackError> {
    let path = root.join(PROJECT_FILE);
    let text = read(&path, Path::new(PROJECT_FILE))?;
    // Only the one key is needed; a broken file is reported properly by `load`.
    Ok(toml::from_str::<toml::Table>(&text).ok().and_then(|t| {
        t.get("project")?
            .get("default_stack")?
            .as_str()
            .map(str::to_string)
    }))
}

/// Names of the stacks in `stacks/`.
pub fn available_stacks(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join(STACKS_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".toml").map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

/// Read `path` (shown to users as `shown`). Text that is not UTF-8 is a diagnostic at the
/// first bad byte, like any other problem in the file.
fn read(path: &Path, shown: &Path) -> Result<String, StackError> {
    let bytes = std::fs::read(path).map_err(|source| StackError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bad = e.as_bytes()[valid];
        let text = std::str::from_utf8(&e.as_bytes()[..valid]).unwrap_or_default();
        let (line, col) = Source::new(shown, text).position(valid);
        StackError::Invalid(vec![Diagnostic {
            file: shown.to_path_buf(),
            line,
            col,
            field: String::new(),
            message: format!("the file is not UTF-8 text (byte 0x{bad:02x})"),
            help: Some("save it as UTF-8".into()),
            snippet: None,
        }])
    })
}

/// What a path that exists is, when it is not a regular file (following symlinks):
/// "is a directory", "is a symlink loop", "is not a regular file (…)". `None` for a regular
/// file and for nothing at all.
fn not_a_regular_file(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => None,
        Ok(m) if m.is_dir() => Some("is a directory".into()),
        Ok(m) => {
            let ft = m.file_type();
            let kind = if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_socket() {
                "a socket"
            } else if ft.is_block_device() || ft.is_char_device() {
                "a device"
            } else {
                "a special file"
            };
            Some(format!("is not a regular file ({kind})"))
        }
        // ELOOP: too many levels of symbolic links.
        Err(e) if e.raw_os_error() == Some(40) => Some("is a symlink loop".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(format!("cannot be read ({e})")),
    }
}

/// The project file's and the selected stack file's texts, as read from disk.
#[derive(Debug, Clone)]
pub struct Files {
    pub project: String,
    pub stack: String,
}

/// Read the project file and the selected stack's file (which must exist).
pub fn read_files(project: &Project) -> Result<Files, StackError> {
    let project_path = project.root.join(PROJECT_FILE);
    let stack_path = project.stack_file();
    if let Some(what) = not_a_regular_file(&stack_path) {
        return Err(StackError::NotAFile {
            path: project.stack_file_display(),
            what,
        });
    }
    if !stack_path.is_file() {
        return Err(StackError::UnknownStack {
            name: project.stack.clone(),
            path: project.stack_file_display(),
            available: available_stacks(&project.root),
        });
    }
    Ok(Files {
        project: read(&project_path, Path::new(PROJECT_FILE))?,
        stack: read(&stack_path, &project.stack_file_display())?,
    })
}

/// One agent `workspace` folder, as found on disk. Validation turns the problems into
/// diagnostics at the `workspace` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workspace {
    /// The path is absolute or climbs out of the project (`..`): not looked at.
    Outside,
    /// The path is inside the project, but a symlink on it leads out (to `target`): not read.
    Escapes { target: PathBuf },
    /// No folder at that path.
    Missing,
    /// The folder's regular files (paths relative to it, `/`-separated), and what could not
    /// be read, in the order the walk met it.
    Read {
        files: BTreeMap<String, Vec<u8>>,
        problems: Vec<WorkspaceProblem>,
    },
}

/// A file or folder inside a workspace that was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceProblem {
    /// A folder or file could not be read (`error` is the I/O error's text).
    Unreadable { path: PathBuf, error: String },
    /// A file name (relative to the workspace) holding control characters.
    ControlChars(String),
    /// A symlink in the workspace (relative path) that leads out of the project: not read.
    LinkOutside { path: String, target: PathBuf },
    /// Neither a file nor a folder (relative path, and what it is): a FIFO, socket, device or
    /// symlink loop.
    NotRegular { path: String, what: String },
}

/// Workspace folders by their `workspace` value, as written in the project file.
pub type Workspaces = BTreeMap<String, Workspace>;

/// Read each named workspace folder (relative to `root`) once.
pub fn read_workspaces<'a>(root: &Path, names: impl IntoIterator<Item = &'a str>) -> Workspaces {
    let mut out = Workspaces::new();
    for name in names {
        if !out.contains_key(name) {
            out.insert(name.to_string(), read_workspace(root, name));
        }
    }
    out
}

/// Every regular file under `root/name`. Symlinks are followed only while they stay inside
/// the project (each folder once, so a link loop ends); one that leads out is a problem, and
/// nothing behind it is read: a workspace ships to the VM, so it must never carry files from
/// elsewhere on this machine.
fn read_workspace(root: &Path, name: &str) -> Workspace {
    let rel = Path::new(name);
    let dir = root.join(rel);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Workspace::Outside;
    }
    if !dir.is_dir() {
        return Workspace::Missing;
    }
    let (Ok(root_c), Ok(dir_c)) = (root.canonicalize(), dir.canonicalize()) else {
        return Workspace::Missing;
    };
    if !dir_c.starts_with(&root_c) {
        return Workspace::Escapes { target: dir_c };
    }
    let mut files = BTreeMap::new();
    let mut problems = Vec::new();
    let mut stack = vec![(dir.clone(), dir_c)];
    let mut seen_dirs = BTreeSet::new();
    while let Some((d, d_c)) = stack.pop() {
        if !seen_dirs.insert(d_c) {
            continue;
        }
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) => {
                problems.push(WorkspaceProblem::Unreadable {
                    path: d.clone(),
                    error: e.to_string(),
                });
                continue;
            }
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            let Ok(relp) = path.strip_prefix(&dir) else {
                continue;
            };
            let relp = relp.to_string_lossy().replace('\\', "/");
            // Where the entry really is: a symlink is judged by its target.
            let (is_dir, is_file) = if ft.is_symlink() {
                let target = match path.canonicalize() {
                    Ok(t) => t,
                    Err(e) if e.raw_os_error() == Some(40) => {
                        problems.push(WorkspaceProblem::NotRegular {
                            path: relp,
                            what: "is a symlink loop".into(),
                        });
                        continue;
                    }
                    Err(e) => {
                        problems.push(WorkspaceProblem::Unreadable {
                            path,
                            error: e.to_string(),
                        });
                        continue;
                    }
                };
                if !target.starts_with(&root_c) {
                    problems.push(WorkspaceProblem::LinkOutside { path: relp, target });
                    continue;
                }
                (target.is_dir(), target.is_file())
            } else {
                (ft.is_dir(), ft.is_file())
            };
            if is_dir {
                match path.canonicalize() {
                    Ok(c) => stack.push((path, c)),
                    Err(e) => problems.push(WorkspaceProblem::Unreadable {
                        path,
                        error: e.to_string(),
                    }),
                }
            } else if !is_file {
                if let Some(what) = not_a_regular_file(&path) {
                    problems.push(WorkspaceProblem::NotRegular { path: relp, what });
                }
            } else {
                if relp.chars().any(|c| c.is_control()) {
                    problems.push(WorkspaceProblem::ControlChars(relp));
                    continue;
                }
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        files.insert(relp, bytes);
                    }
                    Err(e) => problems.push(WorkspaceProblem::Unreadable {
                        path,
                        error: e.to_string(),
                    }),
                }
            }
        }
    }
    Workspace::Read { files, problems }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn write_project(dir: &Path, project: &str, stack: &str) -> Project {
        std::fs::create_dir_all(dir.join("stacks")).unwrap();
        std::fs::write(dir.join(PROJECT_FILE), project).unwrap();
        std::fs::write(dir.join("stacks/dev.toml"), stack).unwrap();
        Project {
            root: dir.to_path_buf(),
            stack: "dev".into(),
        }
    }

    #[test]
    fn non_utf8_file_is_a_diagnostic() {
        let d = tempfile::tempdir().unwrap();
        let p = write_project(d.path(), "", "");
        std::fs::write(
            d.path().join("stacks/dev.toml"),
            b"provider = \"aws\"\nx = \"\xff\"\n",
        )
        .unwrap();
        let e = read_files(&p).unwrap_err().to_string();
        assert_eq!(
            e,
            "stacks/dev.toml:2:6: the file is not UTF-8 text (byte 0xff)\n  help: save it as UTF-8"
        );
    }

    #[test]
    fn workspaces_outside_the_project_are_not_read() {
        let d = tempfile::tempdir().unwrap();
        let w = read_workspaces(d.path(), ["../x", "/etc", "nope", "../x"]);
        assert_eq!(w.len(), 3);
        assert_eq!(w["../x"], Workspace::Outside);
        assert_eq!(w["/etc"], Workspace::Outside);
        assert_eq!(w["nope"], Workspace::Missing);
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_followed_only_inside_the_project() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("id_ed25519"), "PRIVATE KEY").unwrap();
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("agents/eng/sub")).unwrap();
        std::fs::create_dir_all(root.join("shared")).unwrap();
        std::fs::write(root.join("agents/eng/AGENTS.md"), "eng").unwrap();
        std::fs::write(root.join("shared/TOOLS.md"), "tools").unwrap();
        // The workspace folder itself is a link out of the project.
        symlink(outside.path(), root.join("agents/pm")).unwrap();
        // Inside a workspace: a link to a file elsewhere, one inside, a folder inside, a loop.
        symlink(
            outside.path().join("id_ed25519"),
            root.join("agents/eng/key"),
        )
        .unwrap();
        symlink(
            root.join("shared/TOOLS.md"),
            root.join("agents/eng/TOOLS.md"),
        )
        .unwrap();
        symlink(root.join("shared"), root.join("agents/eng/sub/shared")).unwrap();
        symlink(root.join("agents/eng"), root.join("agents/eng/sub/loop")).unwrap();
        let w = read_workspaces(root, ["agents/pm", "agents/eng"]);
        assert!(
            matches!(&w["agents/pm"], Workspace::Escapes { target } if target.ends_with(outside.path().file_name().unwrap())),
            "{:?}",
            w["agents/pm"]
        );
        let Workspace::Read { files, problems } = &w["agents/eng"] else {
            panic!("{:?}", w["agents/eng"]);
        };
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(names, ["AGENTS.md", "TOOLS.md", "sub/shared/TOOLS.md"]);
        assert!(!files.values().any(|b| b == b"PRIVATE KEY"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            matches!(&problems[0], WorkspaceProblem::LinkOutside { path, .. } if path == "key"),
            "{problems:?}"
        );
    }

    /// A property over random layouts: whatever mix of folders, files and symlinks (into the
    /// project, out of it, dangling, looping) a workspace holds, nothing read from it comes
    /// from outside the project root, and every link out of it is reported.
    #[cfg(unix)]
    #[test]
    fn no_layout_of_symlinks_reads_a_byte_from_outside_the_project() {
        use std::os::unix::fs::symlink;
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for round in 0..150 {
            let outside = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(outside.path().join("deep")).unwrap();
            std::fs::write(outside.path().join("secret"), "OUTSIDE-BYTES").unwrap();
            std::fs::write(outside.path().join("deep/key"), "OUTSIDE-BYTES").unwrap();
            let d = tempfile::tempdir().unwrap();
            let root = d.path();
            let mut dirs = vec![root.join("ws")];
            std::fs::create_dir_all(&dirs[0]).unwrap();
            std::fs::create_dir_all(root.join("other")).unwrap();
            std::fs::write(root.join("other/inside"), "INSIDE").unwrap();
            let mut links_out = 0;
            for i in 0..12 {
                let parent = dirs[rand(dirs.len() as u64) as usize].clone();
                let at = parent.join(format!("e{i}"));
                match rand(8) {
                    0 => {
                        std::fs::create_dir_all(&at).unwrap();
                        dirs.push(at);
                    }
                    1 => std::fs::write(&at, "INSIDE").unwrap(),
                    2 => {
                        symlink(outside.path().join("secret"), &at).unwrap();
                        links_out += 1;
                    }
                    3 => {
                        symlink(outside.path().join("deep"), &at).unwrap();
                        links_out += 1;
                    }
                    4 => symlink(root.join("other"), &at).unwrap(),
                    5 => symlink(root.join("other/inside"), &at).unwrap(),
                    6 => symlink(root.join("ws"), &at).unwrap(),
                    _ => symlink(root.join("nowhere"), &at).unwrap(),
                }
            }
            let w = read_workspaces(root, ["ws"]);
            let Workspace::Read { files, problems } = &w["ws"] else {
                panic!("round {round}: {:?}", w["ws"]);
            };
            for (name, bytes) in files {
                assert_eq!(bytes, b"INSIDE", "round {round}: {name}");
            }
            let reported = problems
                .iter()
                .filter(|p| matches!(p, WorkspaceProblem::LinkOutside { .. }))
                .count();
            // Every folder is walked once, so every link out is reported exactly once.
            assert_eq!(reported, links_out, "round {round}: {problems:?}");
        }
    }
}
