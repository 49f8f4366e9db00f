//! The checked-in SDL (`bff-web/schema.graphql`) must match the code's schema.

/// Set `UPDATE_SCHEMA=1` to rewrite the checked-in SDL after an intended schema change.
#[test]
fn the_checked_in_sdl_matches_the_schema() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let sdl = bff_web::schema::sdl();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(path, &sdl).expect("write schema.graphql");
        return;
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == sdl,
        "bff-web/schema.graphql differs from the code's schema; review the change and run \
         `UPDATE_SCHEMA=1 cargo test -p bff-web --test api schema` to update it.\n--- code's schema ---\n{sdl}"
    );
}

#[test]
fn every_type_and_field_of_the_schema_is_described() {
    let sdl = bff_web::schema::sdl();
    let mut previous = "";
    let mut in_description = false;
    let mut in_schema_block = false;
    for line in sdl.lines() {
        if line.starts_with("schema {") {
            in_schema_block = true;
        }
        if in_schema_block {
            in_schema_block = line != "}";
            continue;
        }
        let trimmed = line.trim();
        if trimmed == "\"\"\"" {
            in_description = !in_description;
            previous = trimmed;
            continue;
        }
        if in_description {
            continue;
        }
        let is_definition = (trimmed.starts_with("type ")
            || trimmed.starts_with("enum ")
            || trimmed.starts_with("input "))
            && trimmed.ends_with('{');
        // Fields sit one tab deep; a field with described arguments spans several lines and
        // opens with `name(`.
        let one_deep = line.starts_with('\t') && !line.starts_with("\t\t");
        let is_field = one_deep
            && !trimmed.starts_with('"')
            && !trimmed.starts_with(')')
            && (trimmed.contains(':') || trimmed.ends_with('('));
        if is_definition || is_field {
            assert!(
                previous.ends_with('"'),
                "`{trimmed}` has no description (add a `///`)"
            );
        }
        previous = trimmed;
    }
}
