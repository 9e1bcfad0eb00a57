use super::*;

#[test]
fn lists_are_cut_with_a_count() {
    assert_eq!(listed(["a", "b"], 8), "a, b");
    assert_eq!(listed(Vec::<String>::new(), 8), "");
    let names: Vec<String> = (0..20_000).map(|i| format!("k{i}")).collect();
    assert_eq!(
        listed(&names, LISTED),
        "k0, k1, k2, k3, k4, k5, k6, k7, … and 19992 more"
    );
    // Exactly the limit: nothing counted.
    assert_eq!(listed(&names[..3], 3), "k0, k1, k2");
    // One long name is cut too.
    let long = "x".repeat(10_000);
    let shown = listed([&long], LISTED);
    assert_eq!(shown.chars().count(), CLIPPED + 1);
    assert!(shown.ends_with('…'));
    // Line breaks in a name are escaped: the list stays one line.
    assert_eq!(listed(["a\nb", "c\td"], 8), "a\\nb, c\\td");
}

#[test]
fn clipped_text_is_bounded() {
    assert_eq!(clipped("abc", 3), "abc");
    assert_eq!(clipped("abcd", 3), "abc…");
    assert_eq!(clipped("ééé", 2), "éé…");
    assert_eq!(clipped("", 2), "");
}
