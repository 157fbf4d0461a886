"""The chat page in a real browser: Debian's chromium, headless, driven through its chromedriver.

The page is built from the tiny trained run and served from 127.0.0.1. Its tokenizer must give
Python's ids, and its greedy answers (float32) must be JAX's tokens. Without chromium or the
page's npm libraries these tests fail, naming the setup step: they never skip.
"""
import functools
import http.server
import json
import threading
from pathlib import Path

import pytest

from guppy_jax import web
from guppy_jax.chat import Chatter
from guppy_jax.core.generate import default_answer_len, generate
from guppy_jax.core.tokenizer import encode, format_prompt, load_tokenizer, reads_lowercase
from guppy_jax.export.site import SiteError, check_site_target, library_sources

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PROMPTS = ["hi guppy", "what is the meaning of life", "are you hungry?"]
STRINGS = ["hello there", "What IS the Meaning Of LIFE", "wait... really?! (yes); no: 'maybe' - \"ok\"",
           "fish 🐟 are 😀 nice 🫧", "金魚は水の中で泳ぐ 金鱼", "  double  spaces\ttab\n\nnew lines ",
           "don't 12345 3.14",
           format_prompt("hi"), "é à ü ß", "the tank is big " * 40]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Server:
    """A static server for `folder` on 127.0.0.1, in a thread."""

    def __init__(self, folder):
        handler = functools.partial(QuietHandler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        if self.httpd.socket.fileno() != -1:
            self.httpd.shutdown()
            self.httpd.server_close()


def chromium():
    """A headless chromium driven by selenium, or a failure that says how to install it."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: the browser test needs Debian's browser "
                    f"(apt-get install chromium chromium-driver; scripts/quickstart.py does it in CI)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(300)
    return driver


def call(driver, expression):
    """Await a promise-valued JS expression in the page; its JSON value, or the page's error."""
    found = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"Promise.resolve().then(() => {expression})"
        ".then(v => done({ok: JSON.stringify(v)}), e => done({error: String(e && e.stack || e)}));")
    assert "error" not in found, f"{expression} failed in the page: {found['error']}"
    return json.loads(found["ok"])


@pytest.fixture(scope="module")
def site(trained, tmp_path_factory):
    try:
        library_sources()
    except SiteError as err:
        pytest.fail(str(err))
    out = tmp_path_factory.mktemp("site")
    assert web.main(["build", "--run-dir", str(trained.run_dir), "--out", str(out), "--force", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def page(site):
    """The page with the float32 model, loaded."""
    server, driver = Server(site), chromium()
    try:
        driver.get(server.url + "index.html?precision=float32")
        assert call(driver, "window.guppy.ready") is True
        yield driver
    finally:
        driver.quit()
        server.stop()


def test_the_built_folder_holds_the_page_libraries_and_model(site, capsys):
    names = {str(p.relative_to(site)) for p in site.rglob("*") if p.is_file()}
    assert {"index.html", "app.js", "guppy.js", "lib/onnxruntime-web.js", "lib/ort-wasm-simd-threaded.js",
            "lib/ort-wasm-simd-threaded.wasm", "lib/tokenizers.js", "model/guppy.onnx", "model/guppy.int8.onnx", "model/tokenizer.json",
            "model/guppy.json"} <= names
    with pytest.raises(SiteError, match="--force"):
        check_site_target(site, force=False)
    (site / "notes.txt").write_text("mine")
    with pytest.raises(SiteError, match="notes.txt"):
        check_site_target(site, force=True)
    (site / "notes.txt").unlink()


def test_a_missing_browser_fails_the_test_rather_than_skipping(monkeypatch, tmp_path):
    monkeypatch.setitem(globals(), "CHROMIUM", tmp_path / "chromium")
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium chromium-driver"):
        chromium()


def test_missing_npm_libraries_name_the_setup_step(tmp_path):
    with pytest.raises(SiteError, match="npm ci"):
        library_sources(tmp_path)


def test_the_page_loads_the_model(page):
    info = call(page, "window.guppy.info()")
    assert info["precision"] == "float32" and info["modelBytes"] > 0
    assert "float32 model loaded" in page.find_element("id", "status").text


def test_the_page_tokenizer_gives_pythons_ids(page, trained):
    tok = load_tokenizer(trained.run_dir / "tokenizer.json")
    assert reads_lowercase(tok)  # so the page must lowercase "What IS the Meaning Of LIFE" too
    for text in STRINGS:
        got = call(page, f"window.guppy.encode({json.dumps(text)})")
        assert got == encode(tok, text), f"{text[:40]!r}: page {got} != python {encode(tok, text)}"


def test_greedy_answers_are_jaxs_tokens(page, trained, capsys):
    chatter = Chatter(trained.run_dir, temperature=0.0)
    n = default_answer_len(chatter.cfg)
    rates = []
    for prompt in PROMPTS:
        ids = encode(chatter.tok, format_prompt(prompt))
        want = generate(chatter.cfg, chatter.params, [ids], temperature=0.0, max_new_tokens=n,
                        prompt_len=chatter.prompt_len)[0]
        got = call(page, f"window.guppy.answer({json.dumps(prompt)}, {{temperature: 0}})")
        assert got["promptIds"] == ids, f"{prompt!r}: page prompt ids {got['promptIds']} != python {ids}"
        assert got["ids"] == want, f"{prompt!r}: page tokens {got['ids']} != jax {want}"
        assert got["text"] == chatter.answer(prompt)[0], f"{prompt!r}: page text differs from chat's"
        rate = got["tokensPerSecond"]  # null: no decode step, or one too short for the page's clock
        assert rate is None or rate > 0, f"{prompt!r}: {rate} tokens/s"
        assert rate is not None or len(got["ids"]) <= 2, f"{prompt!r}: no rate for {len(got['ids'])} tokens"
        rates += [rate] if rate is not None else []
    if rates:
        with capsys.disabled():
            print(f"\npage (tiny model, float32): {min(rates):.0f}-{max(rates):.0f} tokens/s in headless chromium")


def test_sampling_filters_that_keep_one_token_are_greedy(page):
    greedy = call(page, "window.guppy.answer('hi guppy', {temperature: 0})")["ids"]
    for options in ("{temperature: 1.5, topK: 1, seed: 3}", "{temperature: 1.5, topP: 1e-6, seed: 4}"):
        assert call(page, f"window.guppy.answer('hi guppy', {options})")["ids"] == greedy, options
    first = call(page, "window.guppy.answer('hi guppy', {temperature: 1.0, topK: 50, seed: 7})")["ids"]
    assert first == call(page, "window.guppy.answer('hi guppy', {temperature: 1.0, topK: 50, seed: 7})")["ids"]


def test_the_page_chats_through_its_form(page):
    greedy = call(page, "window.guppy.answer('hello fish', {temperature: 0})")["text"]
    page.execute_script("document.getElementById('temperature').value = '0';")
    page.find_element("id", "message").send_keys("hello fish\n")
    call(page, "new Promise(r => { const t = setInterval(() => { if (document.querySelector('.fish'))"
               " { clearInterval(t); r(true); } }, 50); })")
    assert page.find_element("css selector", ".you").text == "You> hello fish"
    shown = page.find_element("css selector", ".fish").text
    assert shown == f"Guppy> {greedy}".strip(), f"the form showed {shown!r}, greedy answer {greedy!r}"


def test_the_int8_page_answers_offline_once_loaded(site):
    server, driver = Server(site), chromium()
    try:
        driver.get(server.url + "index.html")
        info = call(driver, "window.guppy.info()")
        assert info["precision"] == "int8"
        server.stop()  # from here on the page has no server
        answer = call(driver, "window.guppy.answer('are you hungry?', {temperature: 0})")
        vocab = info["model"]["vocab_size"]
        assert answer["ids"] and all(0 <= i < vocab for i in answer["ids"]), answer["ids"]
    finally:
        driver.quit()
        server.stop()


def test_a_page_built_without_int8_loads_float32(trained, tmp_path, capsys):
    out = tmp_path / "site"
    assert web.main(["build", "--run-dir", str(trained.run_dir), "--out", str(out), "--no-int8"]) == 0
    printed = capsys.readouterr().out
    assert "page load with the float32 model: " in printed and "int8 model" not in printed
    assert not (out / "model" / "guppy.int8.onnx").exists()
    server, driver = Server(out), chromium()
    try:
        driver.get(server.url + "index.html")
        assert call(driver, "window.guppy.info()")["precision"] == "float32"
    finally:
        driver.quit()
        server.stop()
