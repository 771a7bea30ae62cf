//! Validation findings that name the config key they are about, so the binary can point the
//! operator at the file and line.

use std::fmt;

/// One problem found while validating a parsed config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// Dotted key path with array indexes, e.g. `backend[0].server[1].address`.
    pub path: String,
    /// What is wrong and, where it helps, what would be right.
    pub message: String,
}

impl Issue {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Segments of an issue path: keys and array indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Split `backend[0].server[1].address` into its segments.
pub fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            out.push(Segment::Key(&rest[..open]));
            rest = &rest[open..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(close) = stripped.find(']') else {
                    break;
                };
                if let Ok(i) = stripped[..close].parse() {
                    out.push(Segment::Index(i));
                }
                rest = &stripped[close + 1..];
            }
        } else if !rest.is_empty() {
            out.push(Segment::Key(rest));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_paths() {
        assert_eq!(
            segments("backend[0].server[1].address"),
            vec![
                Segment::Key("backend"),
                Segment::Index(0),
                Segment::Key("server"),
                Segment::Index(1),
                Segment::Key("address")
            ]
        );
        assert_eq!(segments("admin"), vec![Segment::Key("admin")]);
    }
}
