//! Query parameters, read by hand so that every refusal says in plain words which parameter
//! is wrong and what it should look like. (Which parameters a route takes at all is checked
//! by the route guard, from [`ROUTES`](crate::ROUTES).)

use std::collections::HashMap;

use crate::error::ApiError;

/// A query parameter that is a whole number, if present.
pub(crate) fn whole_number(
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Option<u64>, ApiError> {
    params
        .get(name)
        .map(|raw| {
            raw.parse().map_err(|_| {
                ApiError::InvalidRequest(format!(
                    "query parameter {name}: use a whole number, e.g. {name}=100"
                ))
            })
        })
        .transpose()
}

/// A query parameter that must be present and a whole number.
pub(crate) fn required_number(
    params: &HashMap<String, String>,
    name: &str,
) -> Result<u64, ApiError> {
    whole_number(params, name)?.ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "query parameter {name} is required: a whole number, e.g. {name}=1"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_explained_without_type_names() {
        let params: HashMap<String, String> = [("limit".to_owned(), "ten".to_owned())].into();
        let err = whole_number(&params, "limit").unwrap_err().to_string();
        assert!(err.contains("limit") && !err.contains("u64"), "{err}");
        assert_eq!(whole_number(&params, "after").unwrap(), None);
        assert!(required_number(&params, "position").is_err());
    }
}
