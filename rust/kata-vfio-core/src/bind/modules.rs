//! Kernel modules: which vfio variant driver `modules.alias` names for a device, and loading
//! a module when its driver is not registered yet.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::names::ModuleName;
use crate::beneath::read_file_capped;
use crate::error::{Error, Result};

/// The `PATH` modprobe runs with (it may run `install` commands of its configuration).
pub const MODPROBE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// The most of `modules.alias` read (a full distribution kernel's is about 1.5 MB).
const ALIAS_MAX: usize = 64 << 20;

/// Loads a kernel module. The default, [`Modprobe`], runs `/sbin/modprobe`.
pub trait ModuleLoader: Send + Sync {
    /// Loads `module`; the error text says why not.
    fn load(&self, module: &ModuleName) -> std::result::Result<(), String>;
}

/// Runs modprobe directly: an argument list (never a shell), stdin closed, and an
/// environment of `PATH` alone, so nothing of the caller's (`MODPROBE_OPTIONS` naming
/// another configuration, say) reaches it.
#[derive(Debug, Clone)]
pub struct Modprobe {
    pub program: PathBuf,
}

/// Loads nothing: for trees that are not this host's (a copied sysfs root), where running the
/// real modprobe would change the host instead of the tree.
#[derive(Debug, Clone)]
pub struct NoModules {
    /// Why, as the error says it.
    pub reason: String,
}

impl ModuleLoader for NoModules {
    fn load(&self, module: &ModuleName) -> std::result::Result<(), String> {
        Err(format!("not loading {module}: {}", self.reason))
    }
}

impl Default for Modprobe {
    fn default() -> Self {
        Self {
            program: PathBuf::from("/sbin/modprobe"),
        }
    }
}

impl ModuleLoader for Modprobe {
    fn load(&self, module: &ModuleName) -> std::result::Result<(), String> {
        let output = Command::new(&self.program)
            .arg(module.as_str())
            .env_clear()
            .env("PATH", MODPROBE_PATH)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(format!(
                "{} {module} failed ({}): {}",
                self.program.display(),
                output.status,
                stderr.trim()
            ))
        }
    }
}

/// A `vfio_pci:` alias from `modules.alias`: a glob over the device's modalias and the
/// module it selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfioAlias {
    pub pattern: String,
    pub module: ModuleName,
}

impl VfioAlias {
    /// How specific the pattern is: fewer wildcards first, then more literal text.
    fn specificity(&self) -> (usize, usize) {
        let wild = self
            .pattern
            .bytes()
            .filter(|b| matches!(b, b'*' | b'?' | b'['))
            .count();
        (wild, usize::MAX - self.pattern.len())
    }
}

/// Reads the `vfio_pci:` aliases of `modules.alias` (other lines are ignored; a missing file
/// has none).
pub fn read_vfio_aliases(path: &Path) -> Result<Vec<VfioAlias>> {
    let bytes = match read_file_capped(path, ALIAS_MAX) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    Ok(parse_vfio_aliases(&String::from_utf8_lossy(&bytes)))
}

/// Parses `alias vfio_pci:v000010DEd00002342sv*sd*bc*sc*i* nvgrace_gpu_vfio_pci` lines.
pub fn parse_vfio_aliases(text: &str) -> Vec<VfioAlias> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "alias" {
                return None;
            }
            let pattern = words.next()?;
            let module = ModuleName::parse(words.next()?).ok()?;
            pattern.starts_with("vfio_pci:").then(|| VfioAlias {
                pattern: pattern.to_owned(),
                module,
            })
        })
        .collect()
}

/// The module for a device, from its `modalias` (`pci:v...`): the most specific matching
/// `vfio_pci:` alias other than generic `vfio_pci` itself, or `None` for plain vfio-pci.
pub fn variant_for(aliases: &[VfioAlias], modalias: &str) -> Option<ModuleName> {
    let subject = format!("vfio_pci:{}", modalias.strip_prefix("pci:")?);
    aliases
        .iter()
        .filter(|a| {
            a.module.as_str() != "vfio_pci" && glob_match(a.pattern.as_bytes(), subject.as_bytes())
        })
        .min_by_key(|a| (a.specificity(), a.module.clone()))
        .map(|a| a.module.clone())
}

/// `fnmatch(3)` without flags, as kmod matches aliases: `*`, `?` and `[...]` classes
/// (with ranges and `!`/`^` negation).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = match_class(pattern, p, text[t]) {
                        if matched {
                            p = next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[start] == b'['`; returns whether it
/// matched and the index after `]`, or `None` for an unterminated class.
fn match_class(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &lo = pattern.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pattern[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIASES: &str = "\
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci
alias vfio_pci:v000010DEd00002342sv*sd*bc*sc*i* nvgrace_gpu_vfio_pci
alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci
alias vfio_pci:v000015B3d0000101[EF]sv*sd*bc*sc*i* other_vfio_pci
alias vfio_pci:v00001AF4d00001041sv*sd*bc*sc*i* ../evil
";

    #[test]
    fn finds_variant_drivers_by_modalias() {
        let aliases = parse_vfio_aliases(ALIASES);
        assert_eq!(
            aliases.len(),
            4,
            "the e1000e alias and the bad module name are skipped"
        );
        let gpu = "pci:v000010DEd00002342sv000010DEsd000016EBbc03sc02i00";
        assert_eq!(
            variant_for(&aliases, gpu).map(|m| m.to_string()),
            Some("nvgrace_gpu_vfio_pci".into())
        );
        let vf = "pci:v000015B3d0000101Esv000015B3sd00000047bc02sc00i00";
        assert_eq!(
            variant_for(&aliases, vf).map(|m| m.to_string()),
            Some("mlx5_vfio_pci".into())
        );
        let nic = "pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00";
        assert_eq!(variant_for(&aliases, nic), None);
        assert_eq!(variant_for(&aliases, "garbage"), None);
    }

    #[test]
    fn globs_like_fnmatch() {
        assert!(glob_match(b"a*c", b"abbbc"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"ac"));
        assert!(glob_match(b"x[0-9]y", b"x5y"));
        assert!(!glob_match(b"x[!0-9]y", b"x5y"));
        assert!(glob_match(b"x[]]y", b"x]y"));
        assert!(glob_match(b"x[y", b"x[y"));
        assert!(!glob_match(b"abc", b"abcd"));
        assert!(glob_match(b"*d*sv*", b"v1d2sv3"));
    }

    #[test]
    fn modprobe_failure_names_the_program() {
        let loader = Modprobe {
            program: PathBuf::from("/nonexistent/modprobe"),
        };
        let err = loader
            .load(&ModuleName::parse("vfio_pci").expect("name"))
            .expect_err("no program");
        assert!(err.contains("/nonexistent/modprobe"), "{err}");
    }

    #[test]
    fn modprobe_runs_with_path_alone() {
        let dir = std::env::temp_dir().join(format!("kv-modprobe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let script = dir.join("modprobe");
        let record = dir.join("env");
        std::fs::write(&script, format!("#!/bin/sh\nenv > {}\n", record.display())).expect("write");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        Modprobe { program: script }
            .load(&ModuleName::parse("vfio_pci").expect("name"))
            .expect("runs");
        let env = std::fs::read_to_string(&record).expect("env");
        let names: Vec<&str> = env
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .filter(|k| !matches!(*k, "PWD" | "SHLVL" | "_"))
            .collect();
        assert_eq!(names, ["PATH"], "{env}");
        assert!(env.contains(&format!("PATH={MODPROBE_PATH}")), "{env}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_modules_says_why() {
        let err = NoModules {
            reason: "the tree is not this host's".to_owned(),
        }
        .load(&ModuleName::parse("vfio_pci").expect("name"))
        .expect_err("never loads");
        assert!(err.contains("not loading vfio_pci: the tree"), "{err}");
    }
}
