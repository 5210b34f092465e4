//! Rust identifiers for generated items: struct fields from state_dict prefixes (`layer1.0` →
//! `layer1_0`, `3` → `layer_3`) and type names from model names (`vgg_small` → `VggSmall`). Every
//! identifier is validated by syn, so nothing here can panic on odd names.

use proc_macro2::Ident;

use crate::error::Error;

/// Field names the generated struct uses for itself.
const RESERVED: &[&str] = &["workspace"];

/// `text` as an identifier, or `None` if it is not one (keywords included).
fn ident(text: &str) -> Option<Ident> {
    syn::parse_str::<Ident>(text).ok()
}

/// One distinct snake_case field name per layer name, in order.
pub(crate) fn field_names<'a>(layer_names: impl IntoIterator<Item = &'a str>) -> Vec<Ident> {
    let mut taken: Vec<String> = RESERVED.iter().map(|s| (*s).to_owned()).collect();
    let mut fields = Vec::new();
    for (index, name) in layer_names.into_iter().enumerate() {
        let mut base: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        if base.is_empty() || base.starts_with(|c: char| c.is_ascii_digit()) {
            base = format!("layer_{base}");
        }
        if ident(&base).is_none() {
            // A keyword (`type`, `self`, `_`): a trailing underscore makes it an identifier.
            base.push('_');
        }
        let mut candidate = base.clone();
        let mut n = 2;
        while taken.contains(&candidate) {
            candidate = format!("{base}_{n}");
            n += 1;
        }
        let field = ident(&candidate).unwrap_or_else(|| quote::format_ident!("layer_{}", index));
        taken.push(field.to_string());
        fields.push(field);
    }
    fields
}

/// An UpperCamelCase type name for a model name (`vgg_small` → `VggSmall`, `CustomCNN` kept).
pub fn type_name(model_name: &str) -> Result<Ident, Error> {
    let camel: String = model_name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    let camel = if camel.starts_with(|c: char| c.is_ascii_digit()) {
        format!("Model{camel}")
    } else {
        camel
    };
    ident(&camel).ok_or_else(|| Error::InvalidName {
        name: model_name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(input: &[&str]) -> Vec<String> {
        field_names(input.iter().copied())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn fields_are_distinct_snake_case_identifiers() {
        assert_eq!(
            names(&[
                "layer1.0",
                "3",
                "fc2",
                "Head",
                "type",
                "workspace",
                "layer_3",
                "layer1_0"
            ]),
            [
                "layer1_0",
                "layer_3",
                "fc2",
                "head",
                "type_",
                "workspace_2",
                "layer_3_2",
                "layer1_0_2"
            ]
        );
    }

    #[test]
    fn type_names_are_upper_camel_case() {
        assert_eq!(type_name("vgg_small").unwrap(), "VggSmall");
        assert_eq!(type_name("CustomCNN").unwrap(), "CustomCNN");
        assert_eq!(type_name("3d net").unwrap(), "Model3dNet");
        assert!(type_name("").is_err());
    }
}
