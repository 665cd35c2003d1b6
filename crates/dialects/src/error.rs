//! Input errors every dialect reports; the server turns them into each dialect's
//! error envelope and status code.

/// What is wrong with a request, with the JSON path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Malformed or invalid input (400).
    #[error("{message}")]
    Invalid {
        path: String,
        message: String,
        code: &'static str,
        /// Further named details for the error envelope (e.g. `missing_field`).
        extra: Vec<(&'static str, String)>,
    },
    /// Too large (413).
    #[error("{message}")]
    TooLarge {
        path: String,
        message: String,
        limit: usize,
    },
}

impl InputError {
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        InputError::Invalid {
            path: path.into(),
            message: message.into(),
            code: "VALIDATION_ERROR",
            extra: Vec::new(),
        }
    }

    /// Add a named detail to an `Invalid` error.
    pub fn with_detail(mut self, name: &'static str, value: impl Into<String>) -> Self {
        if let InputError::Invalid { extra, .. } = &mut self {
            extra.push((name, value.into()));
        }
        self
    }

    pub fn with_code(mut self, new_code: &'static str) -> Self {
        if let InputError::Invalid { code, .. } = &mut self {
            *code = new_code;
        }
        self
    }

    pub fn too_large(path: impl Into<String>, what: &str, limit: usize) -> Self {
        let path = path.into();
        InputError::TooLarge {
            message: format!("{path}: {what} exceeds the limit of {limit} bytes"),
            path,
            limit,
        }
    }

    pub fn path(&self) -> &str {
        match self {
            InputError::Invalid { path, .. } | InputError::TooLarge { path, .. } => path,
        }
    }

    /// A short, stable reason for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            InputError::Invalid { code, .. } => code,
            InputError::TooLarge { .. } => "TOO_LARGE",
        }
    }
}

/// Parse a JSON body into `T`, reporting the path of the first problem
/// (`events[3].payload`) and mapping serde's recursion limit to a clear message.
pub fn parse_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, InputError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let path = if path == "." { String::new() } else { path };
        let message = if path.is_empty() {
            format!("request body is not valid JSON: {inner}")
        } else {
            format!("{path}: {inner}")
        };
        let code = if inner.is_syntax() || inner.is_eof() {
            "INVALID_JSON"
        } else {
            "VALIDATION_ERROR"
        };
        InputError::Invalid {
            path,
            message,
            code,
            extra: Vec::new(),
        }
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct T {
        events: Vec<E>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct E {
        n: u32,
    }

    #[test]
    fn paths_name_the_field() {
        let e = parse_json::<T>(br#"{"events":[{"n":1},{"n":"x"}]}"#).unwrap_err();
        assert_eq!(e.path(), "events[1].n");
        let e = parse_json::<T>(b"{not json").unwrap_err();
        assert_eq!(e.reason(), "INVALID_JSON");
    }

    #[test]
    fn deep_nesting_is_refused_not_crashed() {
        let deep = format!(
            "{{\"events\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(parse_json::<T>(deep.as_bytes()).is_err());
    }
}
