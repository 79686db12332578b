//! ingress-nginx's `configuration-snippet` read as data, behind
//! `[ingress_nginx] interpret_snippets = true` (a `server-snippet` acts on
//! the whole host, and is never interpreted): heim never pastes nginx text
//! anywhere.
//!
//! A snippet is tokenized as nginx's own configuration reader does
//! (`ngx_conf_read_token`: single and double quotes, the backslash escapes
//! `\"`, `\'`, `\\`, `\t`, `\r`, `\n`, `#` comments from the start of a word
//! to the end of the line, `;` ending a directive), and interpreted only if
//! every directive in it is one of an allow-list that can neither read a
//! file, load a module, run code, nor decide who may pass:
//!
//! * `more_set_headers 'Name: value' ...` (headers-more): sets a response
//!   header, replacing every copy the backend sent, on every status; a name
//!   with no value clears it;
//! * `more_clear_headers Name Name-* ...` (headers-more): removes response
//!   headers, a trailing `*` matching every name with that prefix;
//! * `add_header Name value [always]` (nginx): adds a response header (the
//!   backend's copies stay), only on 200, 201, 204, 206, 301, 302, 303, 304,
//!   307 and 308 unless `always`;
//! * `proxy_set_header Name value` (nginx): the request header sent
//!   upstream instead of the client's; an empty value removes it;
//! * `return 301|302|303|307|308 URL` (nginx): a redirect, before anything
//!   else, its URL's variables expanded as a route redirect's are.
//!
//! Anything else — another directive, a block (`{`), `if`, an `$variable`
//! in a header value or outside [`REDIRECT_VARIABLES`] in a URL, a header
//! heim keeps to itself — refuses the whole snippet: half a snippet is never
//! applied. What the actions do to a request is the proxy's; which
//! annotation a snippet came from (and so which routes it covers) is the
//! translator's.
//!
//! [`REDIRECT_VARIABLES`]: heim_proxy::route::REDIRECT_VARIABLES

use heim_proxy::forward::headers::is_hop_by_hop;
use http::header::{CONTENT_LENGTH, ETAG, HOST, LAST_MODIFIED};
use http::{HeaderName, HeaderValue};

/// The largest snippet interpreted, in bytes.
pub const MAX_SNIPPET_BYTES: usize = 16 * 1024;

/// The most directives one snippet may hold.
pub const MAX_DIRECTIVES: usize = 100;

/// The statuses `add_header` adds to without `always` (nginx's list).
pub const ADD_HEADER_STATUSES: &[u16] = &[200, 201, 204, 206, 301, 302, 303, 304, 307, 308];

/// The codes an interpreted `return` may answer with: redirects only.
pub const RETURN_CODES: &[u16] = &[301, 302, 303, 307, 308];

/// Whether an `add_header` without `always` applies to a response of `status`.
pub fn add_header_applies(status: u16) -> bool {
    ADD_HEADER_STATUSES.contains(&status)
}

/// The response headers a `more_clear_headers` argument names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderPattern {
    /// One name.
    Name(HeaderName),
    /// Every name that starts with this (lower-case, non-empty) prefix, as
    /// headers-more reads `X-Debug-*`; the prefix alone matches too.
    Prefix(String),
}

impl HeaderPattern {
    /// Whether `name` is cleared; never a header heim keeps to itself
    /// (hop-by-hop, `Content-Length`, `X-Heim-*`), whatever the prefix.
    pub fn matches(&self, name: &HeaderName) -> bool {
        if response_refused(name).is_some() {
            return false;
        }
        match self {
            HeaderPattern::Name(n) => n == name,
            HeaderPattern::Prefix(p) => name.as_str().starts_with(p.as_str()),
        }
    }
}

/// What one interpreted directive does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnippetAction {
    /// A response header: `more_set_headers` (`replace`, `always`: every
    /// copy the backend sent gives way to this one, on every status) or
    /// `add_header` (added beside the backend's copies, on
    /// [`ADD_HEADER_STATUSES`] unless `always`; nginx replaces instead for
    /// `ETag` and `Last-Modified`, so those come with `replace`).
    SetResponseHeader {
        name: HeaderName,
        value: HeaderValue,
        always: bool,
        replace: bool,
    },
    /// `more_clear_headers`, or `more_set_headers` with no value: every
    /// response header the pattern matches is removed, on every status.
    ClearResponseHeader(HeaderPattern),
    /// `proxy_set_header`: sent upstream in place of whatever the client
    /// sent under that name; an empty value sends none (as nginx does).
    SetRequestHeader {
        name: HeaderName,
        value: HeaderValue,
    },
    /// `return`: the request is answered with this redirect before sign-in
    /// and policy (as nginx's rewrite phase runs before its access phase);
    /// `to` is an absolute http(s) URL or a path, holding only
    /// [`heim_proxy::route::REDIRECT_VARIABLES`], expanded per request.
    Return { code: u16, to: String },
}

/// The actions of `snippet`, in the order nginx applies them: every
/// headers-more edit before every `add_header` (headers-more's filter runs
/// first in nginx's chain), each kind in snippet order. `Err` names the
/// line and directive that refuse the whole snippet, and why.
pub fn interpret(snippet: &str) -> Result<Vec<SnippetAction>, String> {
    if snippet.len() > MAX_SNIPPET_BYTES {
        return Err(format!(
            "the snippet is {} bytes: at most {MAX_SNIPPET_BYTES} are interpreted",
            snippet.len()
        ));
    }
    let mut more = Vec::new();
    let mut added = Vec::new();
    let mut rest = Vec::new();
    let mut returned: Option<usize> = None;
    for s in statements(snippet)? {
        let Some((name, args)) = s.words.split_first() else {
            continue;
        };
        let at = |why: String| format!("line {}: {}: {why}", s.line, shown(name));
        match name.as_str() {
            "more_set_headers" => more.extend(more_set_headers(args).map_err(at)?),
            "more_clear_headers" => more.extend(more_clear_headers(args).map_err(at)?),
            "add_header" => added.extend(add_header(args).map_err(at)?),
            "proxy_set_header" => rest.push(proxy_set_header(args).map_err(at)?),
            "return" => {
                if let Some(first) = returned {
                    return Err(at(format!(
                        "a second return (the first is on line {first}) would never run"
                    )));
                }
                returned = Some(s.line);
                rest.push(redirect(args).map_err(at)?);
            }
            _ => return Err(at(not_interpreted(name))),
        }
    }
    more.extend(added);
    more.extend(rest);
    Ok(more)
}

// === tokenizer ===

/// One directive: its words (quotes removed, escapes read) and the line
/// its first word starts on.
#[derive(Debug)]
struct Statement {
    words: Vec<String>,
    line: usize,
}

/// The directives of `src`, split as `ngx_conf_read_token` splits them;
/// any block (`{` or `}`) is refused here.
fn statements(src: &str) -> Result<Vec<Statement>, String> {
    let b = src.as_bytes();
    let mut out: Vec<Statement> = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut line = 1usize;
    // Where the current word (or the current directive) starts.
    let (mut start, mut start_line, mut stmt_line) = (0usize, 1usize, 1usize);
    let mut last_space = true;
    let mut need_space = false;
    let mut escaped = false;
    let (mut s_quoted, mut d_quoted) = (false, false);
    let mut comment = false;
    let mut variable = false;
    let finish = |out: &mut Vec<Statement>, words: &mut Vec<String>, line: usize| {
        if out.len() == MAX_DIRECTIVES {
            return Err(format!(
                "line {line}: more than {MAX_DIRECTIVES} directives: the snippet is not interpreted"
            ));
        }
        out.push(Statement {
            words: std::mem::take(words),
            line,
        });
        Ok(())
    };
    for (i, &ch) in b.iter().enumerate() {
        if ch == b'\n' {
            line += 1;
            comment = false;
        }
        if comment {
            continue;
        }
        if escaped {
            escaped = false;
            continue;
        }
        let space = matches!(ch, b' ' | b'\t' | b'\r' | b'\n');
        if need_space {
            // Right after a closing quote.
            if space {
                last_space = true;
                need_space = false;
                continue;
            }
            match ch {
                b';' => {
                    finish(&mut out, &mut words, stmt_line)?;
                    need_space = false;
                    last_space = true;
                    continue;
                }
                b'{' => return Err(block(&words, stmt_line)),
                b')' => {
                    last_space = true;
                    need_space = false;
                }
                _ => {
                    return Err(format!(
                        "line {line}: {:?} right after a closing quote (nginx wants a space, ';' or '{{' there)",
                        char::from(ch)
                    ))
                }
            }
        }
        if last_space {
            start = i;
            start_line = line;
            if space {
                continue;
            }
            match ch {
                b';' | b'{' if words.is_empty() => {
                    return Err(format!(
                        "line {line}: an unexpected {:?} (no directive before it)",
                        char::from(ch)
                    ))
                }
                b';' => finish(&mut out, &mut words, stmt_line)?,
                b'{' => return Err(block(&words, stmt_line)),
                b'}' => {
                    return Err(format!(
                        "line {line}: a '}}' closes a block the snippet did not open (in nginx it would end ingress-nginx's own location or server)"
                    ))
                }
                b'#' => comment = true,
                b'\\' => {
                    escaped = true;
                    last_space = false;
                }
                b'"' => {
                    start = i + 1;
                    d_quoted = true;
                    last_space = false;
                }
                b'\'' => {
                    start = i + 1;
                    s_quoted = true;
                    last_space = false;
                }
                b'$' => {
                    variable = true;
                    last_space = false;
                }
                _ => last_space = false,
            }
            continue;
        }
        // Inside a word: `${name}` does not open a block.
        if ch == b'{' && variable {
            continue;
        }
        variable = false;
        match ch {
            b'\\' => {
                escaped = true;
                continue;
            }
            b'$' => {
                variable = true;
                continue;
            }
            _ => {}
        }
        let found = if d_quoted {
            d_quoted = ch != b'"';
            need_space = !d_quoted;
            !d_quoted
        } else if s_quoted {
            s_quoted = ch != b'\'';
            need_space = !s_quoted;
            !s_quoted
        } else if space || ch == b';' || ch == b'{' {
            last_space = true;
            true
        } else {
            false
        };
        if found {
            if words.is_empty() {
                stmt_line = start_line;
            }
            words.push(unescape(&b[start..i]));
            match ch {
                b';' => finish(&mut out, &mut words, stmt_line)?,
                b'{' => return Err(block(&words, stmt_line)),
                _ => {}
            }
        }
    }
    if s_quoted || d_quoted {
        return Err(format!(
            "line {start_line}: a quote opened here is never closed"
        ));
    }
    if !words.is_empty() || !last_space {
        let at = if words.is_empty() {
            start_line
        } else {
            stmt_line
        };
        return Err(format!(
            "line {at}: the snippet ends inside a directive (a ';' is missing)"
        ));
    }
    Ok(out)
}

/// A word's text as nginx stores it: `\"`, `\'`, `\\` lose the backslash,
/// `\t`, `\r`, `\n` become the control character, any other `\` stays.
fn unescape(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            match raw.get(i + 1) {
                Some(b'"' | b'\'' | b'\\') => i += 1,
                Some(b't') => {
                    out.push(b'\t');
                    i += 2;
                    continue;
                }
                Some(b'r') => {
                    out.push(b'\r');
                    i += 2;
                    continue;
                }
                Some(b'n') => {
                    out.push(b'\n');
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    // Only ASCII bytes are dropped or added: UTF-8 stays UTF-8.
    String::from_utf8_lossy(&out).into_owned()
}

/// The refusal of a block, naming the directive that opens it.
fn block(words: &[String], line: usize) -> String {
    match words.first().map(String::as_str) {
        Some("if") => format!(
            "line {line}: \"if\": conditions are not interpreted (they read nginx variables)"
        ),
        Some(name) => format!(
            "line {line}: {} opens a block ('{{'): blocks are never interpreted",
            shown(name)
        ),
        None => format!("line {line}: an unexpected '{{'"),
    }
}

/// Why a directive off the list is refused.
fn not_interpreted(name: &str) -> String {
    let why = match name {
        "include" => "it reads another file",
        "load_module" => "it loads code into nginx",
        n if n.starts_with("lua_") || n.contains("_by_lua") => "it runs Lua code",
        n if n.starts_with("js_") || n.starts_with("perl") => "it runs code",
        "alias" | "root" | "try_files" => "it serves files from the controller's disk",
        "set" | "map" | "set_escape_uri" => "it sets variables: heim interprets none",
        "if" => "conditions are not interpreted",
        "rewrite" => "rewrites are not interpreted (rewrite-target is)",
        "allow" | "deny" | "satisfy" => "it decides access (heim.dev/allow-source-range does)",
        n if n.starts_with("auth_") => {
            "it decides access (heim.dev/allow-* with heim's sign-in does)"
        }
        n if n.starts_with("proxy_") || n.starts_with("grpc_") => {
            "it changes how nginx proxies (only proxy_set_header is interpreted)"
        }
        _ => "not on the list",
    };
    format!("{why}; only more_set_headers, more_clear_headers, add_header, proxy_set_header and return 301/302/303/307/308 are interpreted")
}

/// `s` quoted for a message, at most 64 characters of it.
fn shown(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{:?}...", &s[..i]),
        None => format!("{s:?}"),
    }
}

// === directives ===

/// `more_set_headers ['Name: value' | 'Name:' | 'Name'] ...`.
fn more_set_headers(args: &[String]) -> Result<Vec<SnippetAction>, String> {
    if args.is_empty() {
        return Err("takes one or more 'Name: value' arguments".into());
    }
    let mut out = Vec::new();
    for arg in args.iter().filter(|a| !a.is_empty()) {
        let (key, value) = headers_more_split(arg)?;
        if key.ends_with('*') {
            return Err(format!(
                "{}: a wildcard name sets a header only where the backend sent one (and adds one named with the '*' otherwise): not interpreted",
                shown(key)
            ));
        }
        let name = response_name(key)?;
        out.push(if value.is_empty() {
            SnippetAction::ClearResponseHeader(HeaderPattern::Name(name))
        } else {
            SnippetAction::SetResponseHeader {
                name,
                value: fixed_value(value)?,
                always: true,
                replace: true,
            }
        });
    }
    Ok(out)
}

/// `more_clear_headers Name Name-* ...` (a value after the name is ignored,
/// as headers-more ignores it).
fn more_clear_headers(args: &[String]) -> Result<Vec<SnippetAction>, String> {
    if args.is_empty() {
        return Err("takes one or more header names".into());
    }
    let mut out = Vec::new();
    for arg in args.iter().filter(|a| !a.is_empty()) {
        let (key, _) = headers_more_split(arg)?;
        let pattern = match key.strip_suffix('*') {
            Some("") => return Err("a bare '*' (headers-more wants a prefix before it)".into()),
            Some(prefix) if !prefix.contains('*') => {
                HeaderName::from_bytes(prefix.as_bytes())
                    .map_err(|_| format!("{} is not a header name prefix", shown(prefix)))?;
                HeaderPattern::Prefix(prefix.to_ascii_lowercase())
            }
            _ if key.contains('*') => {
                return Err(format!("{}: only a trailing '*' is a wildcard", shown(key)))
            }
            _ => HeaderPattern::Name(response_name(key)?),
        };
        out.push(SnippetAction::ClearResponseHeader(pattern));
    }
    Ok(out)
}

/// A headers-more argument as its parser reads it: the name runs to the
/// first ':' or space, then ':'s and spaces are skipped, and the value is
/// the rest (trailing spaces included).
fn headers_more_split(arg: &str) -> Result<(&str, &str), String> {
    // C's isspace.
    let space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r');
    if arg.starts_with('-') {
        return Err(format!(
            "the option {} (-s statuses, -t types, -a append) is not interpreted",
            shown(arg)
        ));
    }
    if arg.starts_with(space) {
        // headers-more then takes the name from the argument's first byte.
        return Err(format!(
            "{}: a space before the name (headers-more misreads the name then)",
            shown(arg)
        ));
    }
    let end = arg.find(|c| c == ':' || space(c)).unwrap_or(arg.len());
    let (key, rest) = arg.split_at(end);
    let value = rest.trim_start_matches(|c| c == ':' || space(c));
    if key.is_empty() {
        return Err(format!("{}: no header name", shown(arg)));
    }
    Ok((key, value))
}

/// `add_header Name value [always]`; `None` for an empty value (nginx adds
/// nothing then).
fn add_header(args: &[String]) -> Result<Option<SnippetAction>, String> {
    let (name, value, always) = match args {
        [n, v] => (n, v, false),
        [n, v, a] if a == "always" => (n, v, true),
        [_, _, a] => return Err(format!("{} is not \"always\"", shown(a))),
        _ => return Err("takes a name, a value and optionally \"always\"".into()),
    };
    let name = response_name(name)?;
    // nginx's add_header replaces the one ETag and Last-Modified a response has.
    let replace = name == ETAG || name == LAST_MODIFIED;
    if value.is_empty() {
        if replace {
            return Err(format!(
                "an empty {name} clears it on some statuses only: not interpreted"
            ));
        }
        return Ok(None);
    }
    Ok(Some(SnippetAction::SetResponseHeader {
        name,
        value: fixed_value(value)?,
        always,
        replace,
    }))
}

/// `proxy_set_header Name value`.
fn proxy_set_header(args: &[String]) -> Result<SnippetAction, String> {
    let [name, value] = args else {
        return Err("takes a name and a value".into());
    };
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{} is not a header name", shown(name)))?;
    if let Some(why) = request_refused(&name) {
        return Err(format!("{name}: {why}"));
    }
    let value = if value.is_empty() {
        HeaderValue::from_static("")
    } else {
        fixed_value(value)?
    };
    Ok(SnippetAction::SetRequestHeader { name, value })
}

/// `return CODE URL` (a 30x) or `return URL` (a 302, as nginx reads a URL
/// starting with `http://`, `https://` or `$scheme`).
fn redirect(args: &[String]) -> Result<SnippetAction, String> {
    let (code, to) = match args {
        [to] if ["http://", "https://", "$scheme"]
            .iter()
            .any(|p| to.starts_with(p)) =>
        {
            (302, to)
        }
        [code] => {
            return Err(match code.parse::<u16>() {
                Ok(c) => {
                    format!("return {c} answers without a Location: only redirects are interpreted")
                }
                Err(_) => format!("{} is neither a code nor an http(s) URL", shown(code)),
            })
        }
        [code, to] => {
            let code = code
                .parse::<u16>()
                .map_err(|_| format!("{} is not a status code", shown(code)))?;
            if !RETURN_CODES.contains(&code) {
                return Err(format!(
                    "return {code}: only the redirects 301, 302, 303, 307 and 308 with a URL are interpreted (a status with a text, as return 200 \"ok\", is not)"
                ));
            }
            (code, to)
        }
        _ => return Err("takes a code and a URL".into()),
    };
    let shape = ["http://", "https://", "/", "$scheme://", "${scheme}://"]
        .iter()
        .any(|p| to.starts_with(p) && (*p == "/" || to.len() > p.len()));
    if !shape || !to.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{} is not an absolute http(s) URL or a path (without spaces or control characters)",
            shown(to)
        ));
    }
    heim_proxy::route::redirect_variables_known(to)?;
    Ok(SnippetAction::Return {
        code,
        to: to.clone(),
    })
}

/// A header value with nothing for nginx to expand.
fn fixed_value(v: &str) -> Result<HeaderValue, String> {
    if v.contains('$') {
        return Err(format!(
            "{}: a header value with an nginx variable is not interpreted (heim sets fixed values; only a return URL expands variables)",
            shown(v)
        ));
    }
    HeaderValue::from_str(v)
        .map_err(|_| format!("{} is not a header value (control characters)", shown(v)))
}

/// A response header name a snippet may set or clear.
fn response_name(key: &str) -> Result<HeaderName, String> {
    let name = HeaderName::from_bytes(key.as_bytes())
        .map_err(|_| format!("{} is not a header name", shown(key)))?;
    match response_refused(&name) {
        Some(why) => Err(format!("{name}: {why}")),
        None => Ok(name),
    }
}

/// Why a response header is not a snippet's to touch.
fn response_refused(name: &HeaderName) -> Option<&'static str> {
    if name == HOST {
        Some("Host is a request header")
    } else if is_hop_by_hop(name) {
        Some("a hop-by-hop header: it belongs to one connection, and heim manages it")
    } else if name == CONTENT_LENGTH {
        Some("heim frames the body itself")
    } else if name.as_str().starts_with("x-heim-") {
        Some("X-Heim-* are heim's own")
    } else {
        None
    }
}

/// Why a request header is not a snippet's to set: heim's framing, its
/// identity headers and what it sets from what it saw.
fn request_refused(name: &HeaderName) -> Option<&'static str> {
    let n = name.as_str();
    Some(match n {
        "host" => "the upstream Host is upstream-vhost's to set",
        "content-length" => "heim frames the body itself",
        "proxy" => "a Proxy header is never forwarded (httpoxy; ingress-nginx clears it too)",
        "forwarded" | "x-real-ip" | "x-request-id" | "x-scheme" => {
            "heim sets it itself, from what it saw"
        }
        "x-auth-request-user"
        | "x-auth-request-email"
        | "x-auth-request-groups"
        | "x-auth-request-preferred-username"
        | "remote-user"
        | "x-remote-user" => "an identity header: only heim's sign-in sets it",
        "x-original-url" | "x-rewrite-url" | "x-original-uri" => {
            "it rewrites the path in some servers: only heim sets it"
        }
        _ if is_hop_by_hop(name) => {
            "a hop-by-hop header: it belongs to one connection, and heim manages it"
        }
        _ if n.starts_with("x-heim-") => "X-Heim-* are heim's identity headers",
        _ if n.starts_with("x-forwarded-") => {
            "heim sets X-Forwarded-* itself, from what it saw (identity ones from its sign-in)"
        }
        _ if n.contains('_') => {
            "heim drops names with '_' (CGI servers read them as '-': a spoofing path)"
        }
        _ => return None,
    })
}

/// With `[ingress_nginx] interpret_snippets`: an Ingress's
/// `configuration-snippet` that [`interpret`] reads whole is applied to
/// `o` as data, and its verdict says so; one it refuses stays refused,
/// with the reason. `server-snippet` and the others are never interpreted
/// (their directives act on the whole host, or on nginx itself).
pub fn apply(
    ingress: &k8s_openapi::api::networking::v1::Ingress,
    o: &mut super::IngressOptions,
    verdicts: &mut [(String, super::nginx::Verdict)],
) {
    use super::nginx::Verdict;
    use heim_proxy::forward::edits::{NamePattern, ResponseEdit};
    let key = format!("{}configuration-snippet", super::nginx::PREFIX);
    let Some(text) = ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&key))
    else {
        return;
    };
    let Some((_, verdict)) = verdicts.iter_mut().find(|(k, _)| *k == key) else {
        return;
    };
    // A snippet that had no effect in ingress-nginx gets none here.
    if !matches!(verdict, Verdict::Refused(_)) {
        return;
    }
    let actions = match interpret(text) {
        Ok(actions) => actions,
        Err(why) => {
            if let Verdict::Refused(message) = verdict {
                *message = format!("{message}; not interpreted: {why}");
            }
            return;
        }
    };
    let mut redirect = None;
    for action in actions {
        match action {
            SnippetAction::SetResponseHeader {
                name,
                value,
                always,
                replace,
            } => o.response_headers.push(ResponseEdit::Set {
                name,
                value,
                always,
                replace,
            }),
            SnippetAction::ClearResponseHeader(p) => {
                o.response_headers.push(ResponseEdit::Clear(match p {
                    HeaderPattern::Name(n) => NamePattern::Name(n),
                    HeaderPattern::Prefix(p) => NamePattern::Prefix(p),
                }))
            }
            SnippetAction::SetRequestHeader { name, value } => {
                let value = Some(value).filter(|v| !v.is_empty());
                o.request_headers.retain(|(n, _)| *n != name);
                o.request_headers.push((name, value));
            }
            SnippetAction::Return { code, to } => redirect = Some((code, to)),
        }
    }
    // A redirect annotation's `return` comes first in the location, as
    // ingress-nginx renders it: the snippet's is then never reached.
    if let (Some((code, to)), None) = (redirect, &o.redirect) {
        o.redirect = Some(heim_proxy::route::Redirect {
            code,
            to,
            root_only: false,
        });
    }
    *verdict = Verdict::Differs(
        "interpreted as data ([ingress_nginx] interpret_snippets): its headers and return apply, nothing else could be written"
            .into(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, value: &str, always: bool, replace: bool) -> SnippetAction {
        SnippetAction::SetResponseHeader {
            name: HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value: HeaderValue::from_str(value).unwrap(),
            always,
            replace,
        }
    }

    fn clear(name: &str) -> SnippetAction {
        SnippetAction::ClearResponseHeader(HeaderPattern::Name(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
        ))
    }

    fn req(name: &str, value: &str) -> SnippetAction {
        SnippetAction::SetRequestHeader {
            name: HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value: HeaderValue::from_str(value).unwrap(),
        }
    }

    fn ret(code: u16, to: &str) -> SnippetAction {
        SnippetAction::Return {
            code,
            to: to.into(),
        }
    }

    fn ok(snippet: &str) -> Vec<SnippetAction> {
        interpret(snippet).unwrap_or_else(|e| panic!("{snippet:?} refused: {e}"))
    }

    /// Refused, with every `wanted` piece in the message.
    fn refused(snippet: &str, wanted: &[&str]) {
        match interpret(snippet) {
            Ok(a) => panic!("{snippet:?} interpreted as {a:?}"),
            Err(e) => {
                for w in wanted {
                    assert!(e.contains(w), "{snippet:?}: {e:?} lacks {w:?}");
                }
            }
        }
    }

    #[test]
    fn more_set_headers_forms() {
        assert_eq!(
            ok(r#"more_set_headers "X-Frame-Options: DENY";"#),
            [set("x-frame-options", "DENY", true, true)]
        );
        // Several arguments, both quotes, the colon-less and spaced forms,
        // an empty argument skipped, and a name alone clearing.
        assert_eq!(
            ok(
                r#"more_set_headers 'X-A: a b' "X-B:b" 'X-C c' "" 'X-D::  d ' 'X-Gone:' X-Also-Gone;"#
            ),
            [
                set("x-a", "a b", true, true),
                set("x-b", "b", true, true),
                set("x-c", "c", true, true),
                set("x-d", "d ", true, true),
                clear("x-gone"),
                clear("x-also-gone"),
            ]
        );
        // ingress-nginx's own e2e snippet.
        assert_eq!(
            ok("more_set_headers \"Foo: Bar\";\n    more_set_headers \"Xpto: Lalala\";"),
            [
                set("foo", "Bar", true, true),
                set("xpto", "Lalala", true, true)
            ]
        );
    }

    #[test]
    fn more_set_headers_refusals() {
        refused(
            r#"more_set_headers -s 404 "X-A: b";"#,
            &["line 1", "more_set_headers", "-s"],
        );
        refused(r#"more_set_headers -t text/html "X-A: b";"#, &["-t"]);
        refused(r#"more_set_headers -a "X-A: b";"#, &["-a"]);
        refused("more_set_headers;", &["one or more"]);
        refused(r#"more_set_headers "X-*: b";"#, &["wildcard"]);
        refused(r#"more_set_headers " X-A: b";"#, &["space before the name"]);
        refused(r#"more_set_headers ": b";"#, &["no header name"]);
        refused(r#"more_set_headers "X-A: $host";"#, &["variable"]);
    }

    #[test]
    fn more_clear_headers_forms() {
        let a = ok("more_clear_headers Server 'X-Powered-By' X-Debug-* \"X-Foo: ignored\";");
        assert_eq!(
            a,
            [
                clear("server"),
                clear("x-powered-by"),
                SnippetAction::ClearResponseHeader(HeaderPattern::Prefix("x-debug-".into())),
                clear("x-foo"),
            ]
        );
        let SnippetAction::ClearResponseHeader(p) = &a[2] else {
            unreachable!()
        };
        let h = |s: &str| HeaderName::from_bytes(s.as_bytes()).unwrap();
        assert!(p.matches(&h("x-debug-trace")) && p.matches(&h("X-Debug-")));
        assert!(!p.matches(&h("x-debug")) && !p.matches(&h("x-other")));
        // A prefix never reaches what heim frames the response with.
        let content = HeaderPattern::Prefix("content-".into());
        assert!(content.matches(&h("content-type")));
        assert!(!content.matches(&h("content-length")));
        assert!(!HeaderPattern::Prefix("t".into()).matches(&h("transfer-encoding")));

        refused("more_clear_headers '*';", &["bare '*'"]);
        refused("more_clear_headers X-*-A;", &["trailing '*'"]);
        refused("more_clear_headers Content-Length;", &["frames the body"]);
        refused("more_clear_headers -s 200 X-A;", &["option"]);
        refused("more_clear_headers;", &["one or more"]);
    }

    #[test]
    fn add_header_forms() {
        assert_eq!(
            ok(r#"add_header Cache-Control "no-store" always;"#),
            [set("cache-control", "no-store", true, false)]
        );
        assert_eq!(
            ok("add_header X-Content-Type-Options nosniff;"),
            [set("x-content-type-options", "nosniff", false, false)]
        );
        // nginx replaces ETag and Last-Modified; an empty value adds nothing.
        assert_eq!(
            ok(r#"add_header ETag '"v1"'; add_header X-Empty "";"#),
            [set("etag", "\"v1\"", false, true)]
        );
        refused(r#"add_header Last-Modified "";"#, &["clears it"]);
        refused("add_header X-A b never;", &["\"never\" is not \"always\""]);
        refused("add_header X-A;", &["takes a name, a value"]);
        refused("add_header X-A b always extra;", &["takes a name, a value"]);
        refused(r#"add_header "X-A:" b;"#, &["not a header name"]);
        refused(
            "add_header Strict-Transport-Security \"max-age=$x\";",
            &["variable"],
        );
        assert!(add_header_applies(204) && add_header_applies(308));
        assert!(!add_header_applies(404) && !add_header_applies(500) && !add_header_applies(300));
    }

    #[test]
    fn proxy_set_header_forms() {
        assert_eq!(
            ok(r#"proxy_set_header X-Api-Key "abc123"; proxy_set_header Accept-Encoding "";"#),
            [req("x-api-key", "abc123"), req("accept-encoding", "")]
        );
        // The common real-world line is refused: heim sends X-Forwarded-Host
        // itself (the client's Host), and a variable would be refused anyway.
        refused(
            "proxy_set_header X-Forwarded-Host $host;",
            &[
                "line 1",
                "proxy_set_header",
                "x-forwarded-host",
                "heim sets",
            ],
        );
        refused("proxy_set_header X-Custom $host;", &["variable"]);
        refused("proxy_set_header X-Custom ${host};", &["variable"]);
        refused("proxy_set_header Host example.com;", &["upstream-vhost"]);
        refused("proxy_set_header X-Heim-User admin;", &["X-Heim-*"]);
        refused("proxy_set_header X-Auth-Request-User admin;", &["identity"]);
        refused("proxy_set_header X_Heim_User admin;", &["'_'"]);
        refused("proxy_set_header X-Real-IP 1.2.3.4;", &["heim sets"]);
        refused("proxy_set_header Proxy x;", &["httpoxy"]);
        refused("proxy_set_header X-A;", &["a name and a value"]);
    }

    #[test]
    fn hop_by_hop_and_framing_names_are_refused() {
        for (snippet, why) in [
            (
                r#"more_set_headers "Transfer-Encoding: chunked";"#,
                "hop-by-hop",
            ),
            (
                r#"more_set_headers "Content-Length: 0";"#,
                "frames the body",
            ),
            (r#"more_set_headers "X-Heim-User: root";"#, "heim's own"),
            ("add_header Connection close;", "hop-by-hop"),
            ("add_header Host x;", "request header"),
            ("add_header Keep-Alive timeout=5 always;", "hop-by-hop"),
            ("proxy_set_header Keep-Alive x;", "hop-by-hop"),
            ("proxy_set_header Connection upgrade;", "hop-by-hop"),
            ("proxy_set_header Transfer-Encoding chunked;", "hop-by-hop"),
            ("proxy_set_header Content-Length 0;", "frames the body"),
            ("proxy_set_header Upgrade websocket;", "hop-by-hop"),
        ] {
            refused(snippet, &[why]);
        }
    }

    #[test]
    fn bad_header_names_and_values() {
        refused(r#"add_header "X Bad" v;"#, &["not a header name"]);
        refused(r#"more_set_headers "X(Bad): v";"#, &["not a header name"]);
        refused("proxy_set_header X@Bad v;", &["not a header name"]);
        refused("more_clear_headers X@Bad-*;", &["not a header name prefix"]);
        // An escaped newline would split the header: refused.
        refused(
            r#"add_header X-A "a\nSet-Cookie: s=1";"#,
            &["not a header value"],
        );
        refused("add_header X-A \"a\\rb\";", &["control characters"]);
        // UTF-8 goes out as its bytes, as nginx sends it.
        let SnippetAction::SetResponseHeader { value, .. } =
            &ok("add_header X-A \"caf\u{e9}\";")[0]
        else {
            unreachable!()
        };
        assert_eq!(value.as_bytes(), "caf\u{e9}".as_bytes());
    }

    #[test]
    fn return_forms() {
        assert_eq!(
            ok("return 301 https://example.com$request_uri;"),
            [ret(301, "https://example.com$request_uri")]
        );
        assert_eq!(ok("return 308 /new/path?x=1;"), [ret(308, "/new/path?x=1")]);
        assert_eq!(
            ok("return 302 $scheme://www.example.com${request_uri};"),
            [ret(302, "$scheme://www.example.com${request_uri}")]
        );
        // nginx's one-argument form is a 302.
        assert_eq!(
            ok("return https://a.example/;"),
            [ret(302, "https://a.example/")]
        );
        for c in [303, 307] {
            assert_eq!(ok(&format!("return {c} /x;")), [ret(c, "/x")]);
        }

        refused(
            r#"return 200 "ok";"#,
            &["line 1", "\"return\"", "return 200", "only the redirects"],
        );
        refused("return 404;", &["without a Location"]);
        refused("return 300 /x;", &["return 300"]);
        refused("return 301;", &["without a Location"]);
        refused("return abc /x;", &["not a status code"]);
        refused(
            "return 301 https://x.example/$remote_addr;",
            &["$remote_addr"],
        );
        refused("return 301 https://x.example/$1;", &["$1"]);
        refused(
            "return 301 javascript:alert(1);",
            &["not an absolute http(s) URL"],
        );
        refused("return 301 \"/a b\";", &["not an absolute"]);
        refused("return 301 https://;", &["not an absolute"]);
        refused("return 301 /a /b;", &["takes a code and a URL"]);
        refused(
            "return 301 /a;\nreturn 302 /b;",
            &["line 2", "second return", "line 1"],
        );
    }

    #[test]
    fn tokenizer_quotes_escapes_and_comments() {
        // `#` starts a comment only at the start of a word; escapes inside
        // both quotes; a value over several lines.
        let s = "# a comment; add_header X-Not set;\n\
                 add_header X-A a#b; # trailing comment\n\
                 add_header X-B \"say \\\"hi\\\"\"  ;\n\
                 add_header X-C 'it\\'s \"fine\"';\n\
                 add_header X-D back\\\\slash;\n\
                 add_header\n  X-E\n  \"tab\\there\"\n  ;";
        assert_eq!(
            ok(s),
            [
                set("x-a", "a#b", false, false),
                set("x-b", "say \"hi\"", false, false),
                set("x-c", "it's \"fine\"", false, false),
                set("x-d", "back\\slash", false, false),
                set("x-e", "tab\there", false, false),
            ]
        );
        // An escaped space stays in the word with its backslash, as nginx
        // keeps unknown escapes.
        assert_eq!(
            ok(r"add_header X-F a\ b;"),
            [set("x-f", r"a\ b", false, false)]
        );
        assert_eq!(ok(""), []);
        assert_eq!(ok("  # only a comment\n\n"), []);
    }

    #[test]
    fn tokenizer_refusals() {
        refused("add_header X-A \"open;\n\n", &["line 1", "never closed"]);
        refused("\nadd_header X-A 'open;", &["line 2", "never closed"]);
        refused("add_header X-A b", &["line 1", "';' is missing"]);
        refused("add_header X-A \"b\"c;", &["after a closing quote"]);
        refused("add_header X-A b;;", &["unexpected ';'"]);
        refused("add_header X-A b; }", &["'}'", "did not open"]);
        refused("add_header X-A b}", &["';' is missing"]);
        refused("add_header X-A b\\", &["';' is missing"]);
    }

    #[test]
    fn blocks_and_if_are_refused() {
        refused(
            "location /x {\n  add_header X-A b;\n}",
            &["line 1", "\"location\"", "block"],
        );
        refused(
            "more_set_headers \"X-A: b\";\nif ($http_x = \"1\") {\n  return 301 /a;\n}",
            &["line 2", "\"if\"", "conditions"],
        );
        refused("add_header X-A b {", &["block"]);
        refused("access_by_lua_block {\n ngx.exit(403)\n}", &["block"]);
        refused("{ add_header X-A b; }", &["unexpected '{'"]);
    }

    #[test]
    fn directives_off_the_list_are_refused() {
        for (snippet, why) in [
            ("access_by_lua 'ngx.exit(403)';", "Lua"),
            ("content_by_lua_file /x.lua;", "Lua"),
            ("lua_need_request_body on;", "Lua"),
            ("include /etc/nginx/secrets.conf;", "reads another file"),
            ("load_module /tmp/evil.so;", "loads code"),
            ("alias /var/run/secrets/;", "controller's disk"),
            ("root /;", "controller's disk"),
            ("set $x 1;", "variables"),
            ("rewrite ^ /x;", "rewrite-target"),
            ("deny all;", "decides access"),
            ("auth_basic off;", "decides access"),
            ("proxy_pass http://evil;", "proxies"),
            ("Add_Header X-A b;", "not on the list"),
        ] {
            refused(snippet, &["line 1", why, "only more_set_headers"]);
        }
    }

    #[test]
    fn one_bad_directive_refuses_the_whole_snippet() {
        refused(
            "more_set_headers \"X-A: b\";\nadd_header X-B c;\n  include /etc/passwd;\nreturn 301 /x;",
            &["line 3", "\"include\""],
        );
    }

    #[test]
    fn bounds() {
        let big = format!("# {}\n", "x".repeat(MAX_SNIPPET_BYTES));
        refused(&big, &["bytes"]);
        let hundred = "add_header X-A b;\n".repeat(MAX_DIRECTIVES);
        assert_eq!(ok(&hundred).len(), MAX_DIRECTIVES);
        refused(
            &format!("{hundred}add_header X-A b;"),
            &["line 101", "more than 100"],
        );
        // A huge directive name is cut short in the message.
        let e = interpret(&format!("{};", "y".repeat(1000))).unwrap_err();
        assert!(e.len() < 400, "{e}");
    }

    #[test]
    fn real_world_snippet_in_nginx_order() {
        let s = r#"
            add_header Cache-Control "no-store" always;
            more_set_headers "X-Frame-Options: DENY";
            more_set_headers "X-Xss-Protection: 1; mode=block";
            more_clear_headers "Server" "X-Powered-By";
            proxy_set_header X-Tenant acme;
            return 301 https://example.com$request_uri;
        "#;
        // headers-more's edits come first (its filter runs before
        // add_header's), each kind in snippet order.
        assert_eq!(
            ok(s),
            [
                set("x-frame-options", "DENY", true, true),
                set("x-xss-protection", "1; mode=block", true, true),
                clear("server"),
                clear("x-powered-by"),
                set("cache-control", "no-store", true, false),
                req("x-tenant", "acme"),
                ret(301, "https://example.com$request_uri"),
            ]
        );
    }
}
