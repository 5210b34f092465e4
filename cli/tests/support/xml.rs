//! A strict check that a text is well-formed XML, for the SVG `cnnc draw` writes: one root
//! element, every tag closed in order, attributes quoted and not repeated, and `&` only in the
//! five predefined entities or numeric character references. Returns the elements' names in
//! document order, so tests can count them too. (No XML crate is a dependency; SVG needs no
//! DTD, CDATA or namespaces beyond the attribute.)

#![allow(dead_code)]

/// The names of the elements of `text` in document order, or what is wrong with it.
pub fn elements(text: &str) -> Result<Vec<String>, String> {
    let mut rest = text;
    if let Some(after) = rest.strip_prefix("<?xml") {
        let end = after.find("?>").ok_or("unclosed XML declaration")?;
        rest = &after[end + 2..];
    }
    let mut open: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut roots = 0;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            check_text(rest)?;
            if !open.is_empty() || !rest.trim().is_empty() {
                return Err(format!(
                    "text after the root or unclosed <{}>",
                    open.join("><")
                ));
            }
            break;
        };
        let text = &rest[..lt];
        check_text(text)?;
        if open.is_empty() && !text.trim().is_empty() {
            return Err(format!("text outside the root: {text:?}"));
        }
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after.find("-->").ok_or("unclosed comment")?;
            rest = &after[end + 3..];
            continue;
        }
        let gt = rest.find('>').ok_or("unclosed tag")?;
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            match open.pop() {
                Some(top) if top == name.trim_end() => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
            continue;
        }
        let (body, empty) = match tag.strip_suffix('/') {
            Some(body) => (body, true),
            None => (tag, false),
        };
        let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
        let name = &body[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || "-_:.".contains(c))
        {
            return Err(format!("bad element name in <{tag}>"));
        }
        check_attributes(&body[name_end..], name)?;
        if open.is_empty() {
            roots += 1;
            if roots > 1 {
                return Err(format!("a second root element <{name}>"));
            }
        }
        names.push(name.to_owned());
        if !empty {
            open.push(name.to_owned());
        }
    }
    if roots == 1 && open.is_empty() {
        Ok(names)
    } else {
        Err(format!("no root, or unclosed <{}>", open.join("><")))
    }
}

/// Attributes: `name="value"` or `name='value'`, separated by whitespace, each name once.
fn check_attributes(mut text: &str, element: &str) -> Result<(), String> {
    let mut seen = Vec::new();
    loop {
        let trimmed = text.trim_start();
        if trimmed.is_empty() {
            return Ok(());
        }
        if trimmed.len() == text.len() {
            return Err(format!(
                "<{element}>: attributes must be separated by spaces"
            ));
        }
        let eq = trimmed
            .find('=')
            .ok_or_else(|| format!("<{element}>: attribute without a value"))?;
        let name = &trimmed[..eq];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || "-_:.".contains(c))
        {
            return Err(format!("<{element}>: bad attribute name {name:?}"));
        }
        if seen.contains(&name) {
            return Err(format!("<{element}>: attribute {name} repeated"));
        }
        seen.push(name);
        let after = &trimmed[eq + 1..];
        let quote = after
            .chars()
            .next()
            .filter(|q| *q == '"' || *q == '\'')
            .ok_or_else(|| format!("<{element}>: {name} is not quoted"))?;
        let end = after[1..]
            .find(quote)
            .ok_or_else(|| format!("<{element}>: {name} is not closed"))?;
        let value = &after[1..1 + end];
        if value.contains('<') {
            return Err(format!("<{element}>: `<` in {name}"));
        }
        check_text(value)?;
        text = &after[end + 2..];
    }
}

/// Character data: no `<`, every `&` starting a known entity or a character reference, no
/// character XML 1.0 forbids.
fn check_text(text: &str) -> Result<(), String> {
    if let Some(c) = text
        .chars()
        .find(|&c| (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(format!("forbidden character {c:?}"));
    }
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        let after = &rest[amp + 1..];
        let semi = after.find(';').ok_or("`&` without `;`")?;
        let entity = &after[..semi];
        let known = ["amp", "lt", "gt", "quot", "apos"].contains(&entity)
            || entity
                .strip_prefix("#x")
                .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
            || entity
                .strip_prefix('#')
                .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
        if !known {
            return Err(format!("unknown entity &{entity};"));
        }
        rest = &after[semi + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::elements;

    #[test]
    fn well_formed_and_not() {
        assert_eq!(
            elements("<?xml version=\"1.0\"?>\n<a x=\"1\"><b/><c y='&amp;'>t &lt;</c></a>\n"),
            Ok(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
        );
        for bad in [
            "<a><b></a></b>",
            "<a x=1/>",
            "<a>&nbsp;</a>",
            "<a/><b/>",
            "<a x=\"1\" x=\"2\"/>",
            "<a>x < y</a>",
            "<a",
            "<a>",
        ] {
            assert!(elements(bad).is_err(), "{bad}");
        }
    }
}
