//! The policy's small glob language: `*` (any run of characters except `/`) and `?`
//! (one character except `/`). Character classes, braces and `**` are refused rather
//! than half-supported, so a pattern means the same in the kernel maps and here.

/// Why a pattern is not a valid glob, if it is not.
pub fn glob_problem(pattern: &str) -> Option<String> {
    if pattern.contains("**") {
        return Some(format!("`**` in `{pattern}` is not supported"));
    }
    pattern
        .chars()
        .find(|c| matches!(c, '[' | ']' | '{' | '}'))
        .map(|c| format!("`{c}` in `{pattern}` is not supported"))
}

/// Whether `pattern` contains a wildcard.
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// Whether `text` matches `pattern` in full.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with one backtrack point: linear in practice, no recursion.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == t[ti] || (p[pi] == '?' && t[ti] != '/')) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            // `*` never swallows a `/`.
            if t[st] == '/' {
                return false;
            }
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        assert!(glob_match(
            "openclaw-gateway*.service",
            "openclaw-gateway.service"
        ));
        assert!(glob_match(
            "openclaw-gateway*.service",
            "openclaw-gateway-work.service"
        ));
        assert!(!glob_match("openclaw-gateway*.service", "openclaw.service"));
        assert!(glob_match(
            "/h/agents/*/agent/a.json",
            "/h/agents/main/agent/a.json"
        ));
        assert!(!glob_match(
            "/h/agents/*/agent/a.json",
            "/h/agents/x/y/agent/a.json"
        ));
        assert!(glob_match("python3.?", "python3.9"));
        assert!(glob_match("*", "bash"));
        assert!(!glob_match("*", "a/b"));
        assert!(glob_problem("a/**/b").is_some());
        assert!(glob_problem("[ab]").is_some());
        assert!(glob_problem("a*b?").is_none());
    }
}
