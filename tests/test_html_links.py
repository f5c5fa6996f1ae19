"""notify.html_links: only the ``href`` of ``<a>`` elements that browsers follow to the web is
rewritten, every other character stays as written, and the image goes before ``</body>``."""

from __future__ import annotations

from notify.html_links import rewrite, web_link


def redirect(target: str) -> str:
    return "https://t.example/r?to=" + target


def test_only_http_and_https_links_are_rewritten_and_nothing_else_moves():
    html = ('<p>Hi <A HREF = "https://shop.example.com/o?a=1&amp;b=2#top" class=big>order</A>, '
            "<a href='http://x.example/'>x</a>, <a href=\"mailto:help@example.com\">mail</a>, "
            '<a href="tel:+14155550100">call</a>, <a href="#top">top</a>, <a href="/relative">rel</a>, '
            '<a href="javascript:alert(1)">js</a>, <a name="anchor">no href</a>, '
            '<link href="https://cdn.example/s.css"></p>')
    out = rewrite(html, redirect)
    # Character references are decoded before the target is handed over, and escaped again after.
    assert ('<a href="https://t.example/r?to=https://shop.example.com/o?a=1&amp;b=2#top" class="big">order</A>'
            in out)
    assert '<a href="https://t.example/r?to=http://x.example/">x</a>' in out
    untouched = out.split("x</a>, ", 1)[1]
    assert untouched == html.split("x</a>, ", 1)[1]


def test_links_inside_comments_and_scripts_are_not_links():
    html = ('<!--[if mso]><a href="https://outlook.example/">o</a><![endif]-->'
            '<script>var s = "<a href=\'https://script.example/\'>";</script>'
            '<style>a[href="https://style.example/"]{}</style><a href="https://real.example/">r</a>')
    out = rewrite(html, redirect)
    assert out == html.replace('<a href="https://real.example/">',
                               '<a href="https://t.example/r?to=https://real.example/">')


def test_whitespace_around_a_target_and_multi_line_tags_are_read_as_browsers_read_them():
    html = ('line one\n<p>\n<a\n  title="x"\n  href="  https://spaced.example/path \n">s</a>\n'
            '<a href="https://two.example/"/>')
    out = rewrite(html, redirect)
    assert out == ('line one\n<p>\n<a title="x" href="https://t.example/r?to=https://spaced.example/path">s</a>\n'
                   '<a href="https://t.example/r?to=https://two.example/" />')


def test_a_link_the_callback_declines_stays_as_it_was():
    html = '<a href="https://keep.example/">k</a><a href="https://swap.example/">s</a>'
    out = rewrite(html, lambda target: None if "keep" in target else redirect(target))
    assert out == '<a href="https://keep.example/">k</a><a href="https://t.example/r?to=https://swap.example/">s</a>'


def test_the_image_goes_before_the_last_body_end_tag_or_at_the_end():
    img = ('<img src="https://t.example/o.gif?a=1&amp;b=2" width="1" height="1" alt="" '
           'style="display:block;width:1px;height:1px;border:0" />')
    assert rewrite("<html><body><p>x</p></BODY></html>", image="https://t.example/o.gif?a=1&b=2") == \
        f"<html><body><p>x</p>{img}</BODY></html>"
    assert rewrite("<p>fragment</p>", image="https://t.example/o.gif?a=1&b=2") == f"<p>fragment</p>{img}"


def test_nothing_to_do_returns_the_document_unchanged():
    html = "<p>No links here &amp; no body.</p>"
    assert rewrite(html, redirect) == html
    assert rewrite(html) == html


def test_web_link_reads_absolute_http_urls_only():
    assert web_link(" https://a.example/x ") == "https://a.example/x"
    assert web_link("HTTP://A.example") == "HTTP://A.example"
    assert web_link("https:///no-host") is None
    assert web_link("//a.example/x") is None
    assert web_link("ftp://a.example/") is None
    assert web_link("https://[::1") is None
