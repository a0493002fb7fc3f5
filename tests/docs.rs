//! The README's option reference and the man page's BEACONS section are generated from the
//! typed configs; these tests fail when either drifts or misses an option.

use beacond::config::describe::{kinds, markdown, roff, README_BEGIN, README_END};

#[test]
fn readme_option_reference_is_the_generated_one() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let b = readme
        .find(README_BEGIN)
        .expect("README has the begin marker")
        + README_BEGIN.len();
    let e = readme.find(README_END).expect("README has the end marker");
    assert!(
        readme[b..e].trim() == markdown().trim(),
        "README.md's beacon options are stale: run `cargo run --example gen-docs -- --readme README.md`"
    );
}

#[test]
fn every_option_of_every_kind_is_in_readme_and_man_page() {
    let md = markdown();
    let man = roff();
    for k in kinds() {
        assert!(
            man.contains(&format!(".SS {}\n", k.name.replace('-', "\\-"))),
            "man page: no {}",
            k.name
        );
        assert!(
            md.contains(&format!("<code>{}</code>", k.name)),
            "README: no {}",
            k.name
        );
        for g in &k.groups {
            for o in &g.options {
                let tp = format!(".TP\n\\fB{}\\fR", o.name.replace('-', "\\-"));
                assert!(
                    man.contains(&tp),
                    "man page: {} has no option {}",
                    k.name,
                    o.name
                );
                assert!(
                    md.contains(&format!("  {}", o.name)),
                    "README: {} has no option {}",
                    k.name,
                    o.name
                );
            }
        }
    }
}

/// groff, where installed (Debian's groff-base, which `man` needs), reads the section without
/// a warning: no stray escapes or control lines from the doc comments.
#[test]
fn man_page_section_renders_without_warnings() {
    let page = format!(".TH BEACOND 8\n{}", roff());
    let out = match std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(page.as_bytes())
                .expect("write to groff");
            child.wait_with_output().expect("groff")
        }
        Err(e) => panic!("groff is needed for this test (apt-get install groff-base): {e}"),
    };
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && warnings.trim().is_empty(),
        "groff: {warnings}"
    );
}
