"""The marking convention of executable examples (tests/docs/examples.py)."""

from pathlib import Path

from tests.docs.examples import extract, localise, matches

PAGE = """# A page

```sh
echo run me
```

```output
run me
```

```sh
echo not run: no output block after it
```

Some prose.

```output
an output block after prose belongs to no example
```

```php
<?php echo "hi";
```


```output
hi
```
"""


def test_only_blocks_followed_by_an_output_block_are_examples(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    examples = extract(page, "page.md")
    assert [(ex.line, ex.language, ex.code, ex.expected) for ex in examples] == [
        (3, "sh", "echo run me", "run me"),
        (21, "php", '<?php echo "hi";', "hi"),
    ]


def test_ellipsis_stands_for_any_text_and_the_rest_must_match():
    assert matches('[{"id":203,...}]', '[{"id":203,"display_name":"Ada"}]\r\n')
    assert matches("a\n...\nz", "a\nb\nc\nz")
    assert not matches('[{"id":3,...}]', '[{"id":203,"display_name":"Ada"}]')
    assert not matches("202", "203")
    assert not matches("202", "2023")


def test_the_documented_address_becomes_the_test_gateway():
    assert localise("curl localhost:8000/v4 http://127.0.0.1:8000/x localhost:80001", 4711) == (
        "curl 127.0.0.1:4711/v4 http://127.0.0.1:4711/x localhost:80001"
    )
