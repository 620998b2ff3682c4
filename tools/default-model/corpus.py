#!/usr/bin/env python3
"""
Builds the training corpus of the default model from freely licensed English text that Debian
packages install on this machine (corpus.sh installs them first).

  extract  each source package -> documents (lists of paragraphs), with a per-package extractor
  clean    NFKC, typographic punctuation -> ASCII, whitespace collapsed, one paragraph per line;
           paragraphs that are not English prose (code, tables, navigation, other languages) dropped
  dedupe   a paragraph seen before (anywhere in the corpus, case-folded) is dropped
  passage  consecutive paragraphs of one document grouped to >= PASSAGE_BYTES
  split    by a hash of the passage text: test (0.5%) / valid (0.5%) / train (99%), so the split
           does not depend on the order of sources, and equal passages can never straddle splits

Output (under --work, default tools/default-model/work/):
  train.txt, valid.txt, test.txt   one paragraph a line, passages separated by one blank line
  sources.json                     per package: version, license, bytes in each split
and, with --model-dir (default models/default/): test.txt and SOURCES.md.

Standard library only; deterministic: the same installed package versions give the same bytes.
"""
import argparse
import gzip
import hashlib
import html
import json
import os
import re
import subprocess
import sys
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

PASSAGE_BYTES = 2000          # a passage is the unit of the split: ~500 tokens, one training context
TEST_PER_MILLE = 5            # hash bucket 0..4 -> test
VALID_PER_MILLE = 5           # hash bucket 5..9 -> valid

# ---------------------------------------------------------------------------------------------
# Cleaning


# Typographic characters mapped to ASCII, so a prompt typed on a keyboard matches training text.
PUNCTUATION = str.maketrans({
    '\u2018': "'", '\u2019': "'", '\u201a': "'", '\u201b': "'", '\u2032': "'",
    '\u201c': '"', '\u201d': '"', '\u201e': '"', '\u201f': '"', '\u2033': '"',
    '\u2013': '-', '\u2014': '--', '\u2015': '--', '\u2212': '-', '\u2010': '-', '\u2011': '-',
    '\u2026': '...', '\u00a0': ' ', '\u00ad': None, '\u200b': None, '\u200c': None, '\u200d': None,
    '\ufeff': None, '\u00b6': None,  # pilcrow: Sphinx header links
})
STOPWORDS = frozenset('the of and to a in is that for it as with be on by this are or not from at which an '
                      'you he his they we was have has will can but all if one their so there when who'.split())
CODE_CHARS = frozenset('{}[]<>=;_\\|$#@*^~`')


def clean_paragraph(text):
    """Whitespace collapsed, punctuation made ASCII; '' when the paragraph is not English prose."""
    text = unicodedata.normalize('NFKC', text).translate(PUNCTUATION)
    text = ' '.join(text.split())
    if len(text) < 40:
        return ''
    words = text.split()
    if len(words) < 6:
        return ''
    n = len(text)
    if sum(1 for ch in text if ord(ch) < 128) < 0.98 * n:          # another script, or mojibake
        return ''
    if sum(1 for ch in text if ch.isalpha() or ch == ' ') < 0.75 * n:  # numbers, tables, code
        return ''
    if sum(1 for ch in text if ch in CODE_CHARS) > 0.02 * n:            # code, markup remnants
        return ''
    if sum(1 for w in words if w.lower().strip('.,;:()"\'') in STOPWORDS) < 0.1 * len(words):
        return ''                                                       # lists of names, not sentences
    return text


# ---------------------------------------------------------------------------------------------
# Extractors: each yields (document name, [paragraph, ...]) with raw paragraphs.


def blank_line_paragraphs(text):
    """Paragraphs of plain text: blocks separated by blank lines, lines joined."""
    return [' '.join(block.split()) for block in re.split(r'\n\s*\n', text) if block.strip()]


class HtmlParagraphs(HTMLParser):
    """
    Text of an HTML page as paragraphs: block elements end a paragraph; code (<pre>), scripts,
    navigation and Sphinx/DocBook chrome are skipped, since they are not English prose.
    """
    BLOCK = {'p', 'div', 'li', 'ul', 'ol', 'dl', 'dt', 'dd', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'tr',
             'td', 'th', 'table', 'br', 'section', 'article', 'blockquote', 'caption', 'figure',
             'figcaption', 'hr', 'body', 'center', 'form', 'aside'}
    SKIP_TAGS = {'script', 'style', 'pre', 'head', 'nav', 'footer', 'header', 'noscript', 'svg', 'math',
                 'textarea', 'select', 'button', 'object'}
    # class / id / role words of navigation, tables of contents and code listings (Sphinx, DocBook,
    # Asciidoctor, Texinfo): whole words, since 'toc2' is also a class of Asciidoctor's <body>.
    SKIP_CLASSES = frozenset(
        'sphinxsidebar sphinxsidebarwrapper related headerlink navheader navfooter toc toc2 toctitle '
        'breadcrumb breadcrumbs footer header highlight literal-block literalblock listingblock '
        'programlisting screen synopsis funcsynopsis cmdsynopsis navigation nav navbar menu '
        'contents toctree-wrapper'.split())
    VOID = {'br', 'hr', 'img', 'input', 'meta', 'link', 'area', 'base', 'col', 'embed', 'param', 'source',
            'track', 'wbr'}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paragraphs = []
        self.current = []
        self.skip_tag = None     # tag name that opened the skipped region
        self.skip_depth = 0      # nesting of skip_tag inside it

    def flush(self):
        text = ' '.join(''.join(self.current).split())
        if text:
            self.paragraphs.append(text)
        self.current = []

    def handle_starttag(self, tag, attrs):
        if self.skip_tag is not None:
            if tag == self.skip_tag and tag not in self.VOID:
                self.skip_depth += 1
            return
        words = ' '.join(v or '' for k, v in attrs if k in ('class', 'role', 'id')).lower().split()
        if tag in self.SKIP_TAGS or (tag not in self.VOID and tag not in ('html', 'body')
                                     and not self.SKIP_CLASSES.isdisjoint(words)):
            self.flush()
            self.skip_tag, self.skip_depth = tag, 1
            return
        if tag in self.BLOCK:
            self.flush()

    def handle_startendtag(self, tag, attrs):
        if self.skip_tag is None and tag in self.BLOCK:
            self.flush()

    def handle_endtag(self, tag):
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skip_tag = None
            return
        if tag in self.BLOCK:
            self.flush()

    def handle_data(self, data):
        if self.skip_tag is None:
            self.current.append(data)


def html_files(files):
    for path in files:
        parser = HtmlParagraphs()
        parser.feed(Path(path).read_text(encoding='utf-8', errors='replace'))
        parser.close()
        parser.flush()
        yield str(path), parser.paragraphs


def glob_sorted(pattern_root, *patterns):
    root = Path(pattern_root)
    found = set()
    for pattern in patterns:
        found.update(p for p in root.glob(pattern) if p.is_file())
    return sorted(found)


def sphinx_html(root, *skip_dirs):
    """Every page of a Sphinx (or similar) HTML tree but its indexes, search page and reST sources."""
    skip = {'_sources', '_static', '_images', *skip_dirs}
    return html_files([p for p in glob_sorted(root, '**/*.html')
                       if not skip & set(p.relative_to(root).parts)
                       and p.name not in ('search.html', 'py-modindex.html') and not p.name.startswith('genindex')])


def separated_entries(files, separator):
    """Text files of entries between separator lines (Crawl's %%%%); '#' lines are comments."""
    for path in files:
        text = Path(path).read_text(encoding='utf-8', errors='replace')
        paragraphs = []
        for entry in text.split(separator):
            entry = '\n'.join(l for l in entry.split('\n') if not l.startswith('#'))
            paragraphs += blank_line_paragraphs(entry)
        yield str(path), paragraphs


def kjv_bible():
    """bible-kjv-text through its reader: one document a chapter, the verses joined into one paragraph."""
    out = subprocess.run(['bible', '-l0', 'gen1:1-rev22:21'], capture_output=True, text=True, check=True).stdout
    name, verses = None, []
    for line in out.splitlines():
        verse = re.match(r'^\s+\d+ (.*)$', line)
        if verse:
            verses.append(verse.group(1))
        elif line.strip():
            if verses:
                yield f'KJV {name}', [' '.join(verses)]
            name, verses = line.strip(), []
    if verses:
        yield f'KJV {name}', [' '.join(verses)]


SWORD_RANGE = 'Genesis 1:1-Revelation of John 22:21'


def sword_bible(module):
    """A SWORD Bible in OSIS markup: one document a chapter, verses joined into one paragraph."""
    out = subprocess.run(['diatheke', '-b', module, '-f', 'osis', '-k', SWORD_RANGE],
                         capture_output=True, text=True, check=True).stdout
    chapters = {}
    for line in out.splitlines():
        m = re.match(r'^(.+? \d+):\d+: (.*)$', line)
        if not m:
            continue
        # '<w>God</w><w>created</w>' occurs in the module data: a word boundary without a space.
        text = re.sub(r'<note\b.*?</note>', '', m.group(2).replace('</w><w', '</w> <w'))
        text = html.unescape(re.sub(r'<[^>]*>', '', text))
        chapters.setdefault(m.group(1), []).append(text)
    for chapter, verses in chapters.items():
        yield f'{module} {chapter}', [' '.join(verses)]


def sword_commentary(module):
    """A SWORD commentary: entries shared by several verses are printed once per verse; keep the first."""
    out = subprocess.run(['diatheke', '-b', module, '-f', 'plain', '-k', SWORD_RANGE],
                         capture_output=True, text=True, check=True).stdout
    seen = set()
    book, paragraphs = None, []
    for line in out.splitlines():
        m = re.match(r'^((?:\d )?[A-Za-z ]+?) \d+:\d+: ?(.*)$', line)
        if m:
            if m.group(1) != book:
                if paragraphs:
                    yield f'{module} {book}', paragraphs
                book, paragraphs = m.group(1), []
            entry = m.group(2)
        else:
            entry = line                              # continuation line of a multi-line entry
        # '* Verses 3-5 *' and runs of spaces separate the parts of an entry.
        for part in re.split(r'\s{3,}|\*[^*]{0,40}\*', entry):
            part = part.strip()
            if part and part not in seen:
                seen.add(part)
                paragraphs.append(part)
    if paragraphs:
        yield f'{module} {book}', paragraphs


DICTD_BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'


def dictd_number(digits):
    """Offsets and lengths in a dictd .index are base-64 numbers, most significant digit first."""
    n = 0
    for ch in digits:
        n = n * 64 + DICTD_BASE64.index(ch)
    return n


def dictd(name):
    """
    A dictd database: the .index lists (headword, offset, length) into the .dict.dz (gzip-compatible)
    data; each entry is read once in data order, 200 entries a document. {braces} (cross-references)
    and <subject> tags (FOLDOC) are markup; the words stay.
    """
    with gzip.open(f'/usr/share/dictd/{name}.dict.dz', 'rb') as f:
        data = f.read()
    spans = set()
    for line in Path(f'/usr/share/dictd/{name}.index').read_text(encoding='utf-8').splitlines():
        fields = line.split('\t')
        if len(fields) >= 3 and not fields[0].startswith('00-database'):
            spans.add((dictd_number(fields[1]), dictd_number(fields[2])))
    entries = [data[o:o + n].decode('utf-8', 'replace') for o, n in sorted(spans)]
    for i in range(0, len(entries), 200):
        paragraphs = []
        for entry in entries[i:i + 200]:
            for p in blank_line_paragraphs(entry):
                paragraphs.append(re.sub(r'<[a-z, ]+>\s*|[{}]', '', p))
        yield f'{name} entries {i}-{i + 199}', paragraphs


POD_CODE = re.compile(r'([A-Z])(?:<<+\s+(.*?)\s+>>+|<([^<>]*)>)')
POD_ESCAPES = {'lt': '<', 'gt': '>', 'verbar': '|', 'sol': '/'}


def pod_strip_codes(text):
    """B<bold>, C<code>, L<text|target> -> their text; E<gt> -> '>'; X<index> and Z<> -> nothing."""
    def inner(m):
        code, body = m.group(1), m.group(2) if m.group(2) is not None else m.group(3)
        if code == 'L':
            return body.split('|', 1)[0]
        if code == 'E':
            return POD_ESCAPES.get(body, html.unescape(f'&{body};'))
        return '' if code in 'XZ' else body
    for _ in range(5):                                # codes nest: B<I<x>>
        text, count = POD_CODE.subn(inner, text)
        if count == 0:
            break
    return text


def pod_files(files):
    """Perl POD: ordinary paragraphs kept with formatting codes removed; verbatim (code) dropped."""
    for path in files:
        paragraphs = []
        in_pod = True
        for block in re.split(r'\n\s*\n', Path(path).read_text(encoding='utf-8', errors='replace')):
            if not block.strip():
                continue
            if block.startswith('=cut'):
                in_pod = False
                continue
            if block.startswith('='):
                in_pod = True
                m = re.match(r'=(head\d|item)\s+(.*)', block, re.S)
                if m:
                    paragraphs.append(pod_strip_codes(m.group(2)))
                continue
            if not in_pod or block[0].isspace():      # program text, or verbatim (code) paragraph
                continue
            paragraphs.append(pod_strip_codes(block))
        yield str(path), paragraphs


def man_page(path):
    env = dict(os.environ, MANWIDTH='4000', MAN_KEEP_FORMATTING='', LC_ALL='C.UTF-8')
    rendered = subprocess.run(['man', '-E', 'UTF-8', '-l', str(path)], capture_output=True, env=env).stdout
    text = subprocess.run(['col', '-bx'], input=rendered, capture_output=True).stdout.decode('utf-8', 'replace')
    # Hyphenation is off at this width; indented blocks are options or examples, kept as paragraphs.
    return str(path), blank_line_paragraphs(text)


def man_pages(package):
    files = subprocess.run(['dpkg', '-L', package], capture_output=True, text=True, check=True).stdout.split('\n')
    pages = []
    for f in sorted(files):
        if re.match(r'^/usr/share/man/man\d/.*\.gz$', f) and os.path.isfile(f) and not os.path.islink(f):
            with gzip.open(f, 'rb') as g:
                if g.read(4) == b'.so ':              # a redirect to another page
                    continue
            pages.append(f)
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        yield from pool.map(man_page, pages)


# ---------------------------------------------------------------------------------------------
# The sources: Debian package, license (read from /usr/share/doc/<package>/copyright), extractor.

PY = '/usr/share/doc/python3.11/html'
LINUX = '/usr/share/doc/linux-doc-6.1/html'
SOURCES = [
    ('bible-kjv-text', 'Public domain (King James Version, 1611; reader program GPL-2+)', kjv_bible),
    ('sword-text-web', 'Public domain (World English Bible)', lambda: sword_bible('engWEB2015eb')),
    ('sword-comm-mhcc', "Public domain (Matthew Henry's Concise Commentary)", lambda: sword_commentary('MHCC')),
    ('sword-comm-tdavid', "Public domain (C. H. Spurgeon's Treasury of David)", lambda: sword_commentary('TDavid')),
    ('sword-comm-scofield', 'Public domain (Scofield Reference Notes, 1917)', lambda: sword_commentary('Scofield')),
    ('dict-devil', "Public domain (Ambrose Bierce, The Devil's Dictionary)", lambda: dictd('devil')),
    ('dict-jargon', 'Public domain (The Jargon File 4.4.7)', lambda: dictd('jargon')),
    ('dict-foldoc', 'GFDL-1.1+ with no invariant sections (FOLDOC)', lambda: dictd('foldoc')),
    ('python3.11-doc', 'PSF-2.0 (Python documentation)', lambda: sphinx_html(PY)),
    ('postgresql-doc-15', 'PostgreSQL (BSD-style)', lambda: html_files(glob_sorted('/usr/share/doc/postgresql-doc-15/html', '*.html'))),
    ('perl-doc', 'GPL-1+ or Artistic', lambda: pod_files(glob_sorted('/usr/share/perl/5.36/pod', '*.pod'))),
    ('debian-handbook', 'GPL-2+ or CC-BY-SA-3.0', lambda: html_files(glob_sorted('/usr/share/doc/debian-handbook/html/en-US', '*.html'))),
    ('debian-reference-en', 'GPL-2+', lambda: html_files(glob_sorted('/usr/share/debian-reference', '*.en.html'))),
    ('debian-policy', 'GPL-2+', lambda: html_files(glob_sorted('/usr/share/doc/debian-policy', 'policy.html/*.html', '*.html'))),
    ('developers-reference', 'GPL-2', lambda: html_files(
        [p for p in glob_sorted('/usr/share/developers-reference', '*.html') if p.name != 'developers-reference.html'])),
    ('maint-guide', 'GPL-2+', lambda: html_files(glob_sorted('/usr/share/doc/maint-guide/html', '*.en.html'))),
    ('debian-faq', 'Verbatim and modified copies permitted (SPI permission notice)', lambda: html_files(glob_sorted('/usr/share/doc/debian/FAQ', '*.en.html'))),
    ('harden-doc', 'GPL-2', lambda: html_files(glob_sorted('/usr/share/doc/harden-doc/html/en-US', '*.html'))),
    ('debian-history', 'GPL-2+', lambda: html_files(glob_sorted('/usr/share/doc/debian-history/docs', '*.en.html'))),
    ('git-doc', 'GPL-2', lambda: html_files(glob_sorted('/usr/share/doc/git-doc', '*.html', 'howto/*.html', 'technical/*.html'))),
    ('bash-doc', 'GFDL-1.3 with no invariant sections (Bash Reference Manual)', lambda: html_files(['/usr/share/doc/bash-doc/bashref.html'])),
    ('gimp-help-en', 'GFDL-1.2+ with no invariant sections', lambda: html_files(glob_sorted('/usr/share/gimp/2.0/help/en', '*.html'))),
    ('libreoffice-help-en-us', 'MPL-2.0', lambda: html_files(glob_sorted('/usr/share/libreoffice/help/en-US', '**/*.html'))),
    ('manpages', 'Linux man-pages licenses (GPL-2+, BSD, Expat, Linux-man-pages-copyleft)', lambda: man_pages('manpages')),
    ('manpages-dev', 'Linux man-pages licenses (GPL-2+, BSD, Expat, Linux-man-pages-copyleft)', lambda: man_pages('manpages-dev')),
    ('linux-doc-6.1', 'GPL-2 (Linux kernel documentation)', lambda: sphinx_html(LINUX, 'translations')),
    ('python-django-doc', 'BSD-3-Clause (Django documentation)', lambda: sphinx_html('/usr/share/doc/python-django-doc/html')),
    ('sphinx-doc', 'BSD-2-Clause (Sphinx documentation)', lambda: sphinx_html('/usr/share/doc/sphinx-doc/html')),
    ('sqlite3-doc', 'Public domain (SQLite documentation)', lambda: html_files(glob_sorted('/usr/share/doc/sqlite3', '**/*.html'))),
    ('installation-guide-amd64', 'GPL-2+ (Debian installation guide)', lambda: html_files(glob_sorted('/usr/share/doc/installation-guide-amd64/en', '*.html'))),
    ('apache2-doc', 'Apache-2.0 (Apache HTTP Server documentation)', lambda: html_files(glob_sorted('/usr/share/doc/apache2-doc/manual/en', '**/*.html'))),
    ('zsh-doc', 'Zsh license (MIT-like)', lambda: html_files(glob_sorted('/usr/share/doc/zsh-common/html', '*.html'))),
    ('kicad-doc-en', 'GPL-3+ or CC-BY-3.0+ (KiCad documentation)', lambda: html_files(glob_sorted('/usr/share/doc/kicad/help/en', '*.html'))),
    ('debian-edu-doc-en', 'GPL-2+ (Debian Edu manuals)', lambda: html_files(glob_sorted('/usr/share/doc/debian-edu-doc-en', '*.html'))),
    ('wireshark-doc', 'GPL-2+ (Wireshark user and developer guides)', lambda: html_files(glob_sorted('/usr/share/doc/wireshark', 'wsug_html_chunked/*.html', 'wsdg_html_chunked/*.html'))),
    ('octave-doc', 'GPL-3+ (GNU Octave manual)', lambda: html_files(glob_sorted('/usr/share/doc/octave', 'octave.html/*.html'))),
    ('r-doc-html', 'GPL-2 (R manuals)', lambda: html_files(glob_sorted('/usr/share/doc/r-doc-html/manual', '*.html'))),
    ('python-sqlalchemy-doc', 'Expat (SQLAlchemy documentation)', lambda: sphinx_html('/usr/share/doc/python-sqlalchemy-doc/html')),
    ('nodejs-doc', 'Expat (Node.js API documentation)', lambda: html_files(
        [p for p in glob_sorted('/usr/share/doc/nodejs/api', '*.html') if p.name != 'all.html'])),
    ('python-pandas-doc', 'BSD-3-Clause (pandas documentation)', lambda: sphinx_html('/usr/share/doc/python-pandas-doc/html')),
    ('python-astropy-doc', 'BSD-3-Clause (Astropy documentation)', lambda: sphinx_html('/usr/share/doc/python-astropy-doc/html')),
    ('erlang-doc', 'Apache-2.0 (Erlang/OTP documentation)', lambda: html_files(glob_sorted('/usr/share/doc/erlang-doc', '**/*.html'))),
    ('gnucash-docs', 'GFDL-1.1+ with no invariant sections (GnuCash guide and help)', lambda: html_files(
        glob_sorted('/usr/share/doc/gnucash-docs', 'gnucash-guide-en/*.html', 'gnucash-help-en/*.html'))),
    ('crawl-common', 'GPL-2+ (Dungeon Crawl Stone Soup descriptions)', lambda: separated_entries(
        [p for p in glob_sorted('/usr/share/crawl/dat/descript', '*.txt') if p.name != 'quotes.txt'], '%%%%')),
]
# The commands the extractors run, from packages that are not themselves text sources.
TOOL_PACKAGES = ['bible-kjv', 'diatheke', 'man-db', 'groff-base', 'bsdextrautils']


# ---------------------------------------------------------------------------------------------


def split_of(passage):
    bucket = int(hashlib.sha1(passage.encode('utf-8')).hexdigest()[:8], 16) % 1000
    return 'test' if bucket < TEST_PER_MILLE else 'valid' if bucket < TEST_PER_MILLE + VALID_PER_MILLE else 'train'


def passages(paragraphs):
    """Consecutive paragraphs grouped until a group holds PASSAGE_BYTES; a short tail joins the last."""
    groups, current, size = [], [], 0
    for p in paragraphs:
        current.append(p)
        size += len(p) + 1
        if size >= PASSAGE_BYTES:
            groups.append(current)
            current, size = [], 0
    if current:
        if groups and size < PASSAGE_BYTES // 2:
            groups[-1].extend(current)
        else:
            groups.append(current)
    return ['\n'.join(g) for g in groups]


def package_version(package):
    return subprocess.run(['dpkg-query', '-W', '-f=${Version}', package], capture_output=True, text=True).stdout


def write_sources_md(path, stats, totals):
    lines = [
        '# Sources of the default model\'s corpus',
        '',
        'Every byte of training, validation and test text comes from these Debian 12 (bookworm) packages,',
        'installed with apt and extracted by `tools/default-model/corpus.sh`. Debian main holds only',
        'DFSG-free works; each license below was read from `/usr/share/doc/<package>/copyright`.',
        'Bytes are UTF-8 after cleaning (one paragraph a line), before the split into train / valid / test.',
        '',
        '| package | version | license | documents | bytes | train | valid | test |',
        '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |',
    ]
    for s in stats:
        lines.append(f"| `{s['package']}` | {s['version']} | {s['license']} | {s['documents']} | {s['bytes']:,} | "
                     f"{s['train']:,} | {s['valid']:,} | {s['test']:,} |")
    lines.append(f"| **total** | | | {totals['documents']} | {totals['bytes']:,} | {totals['train']:,} | "
                 f"{totals['valid']:,} | {totals['test']:,} |")
    lines += [
        '',
        'Cleaning: Unicode NFKC, typographic quotes and dashes made ASCII, whitespace collapsed; a paragraph',
        'is kept when it has at least 6 words and 40 characters, at least 98% ASCII characters, at least 75%',
        'letters and spaces, at most 2% code characters (braces, brackets, angle brackets, `= ; _ \\ | $ # @ * ^ ~`',
        'and the backquote), and at least 10% common English words (the, of, and, to, ...).',
        'HTML code blocks (`<pre>`), navigation and page chrome, POD verbatim blocks and man-page',
        'redirects are skipped. A paragraph seen before (case-folded) anywhere in the corpus is dropped.',
        f'Paragraphs are grouped into passages of at least {PASSAGE_BYTES} bytes within one document; a passage goes to',
        f'test when the first 32 bits of its SHA-1, modulo 1000, are below {TEST_PER_MILLE}, to valid when below',
        f'{TEST_PER_MILLE + VALID_PER_MILLE}, else to train.',
        '',
    ]
    Path(path).write_text('\n'.join(lines))


def main():
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--work', default=str(here / 'work'), help='where train/valid/test.txt go')
    ap.add_argument('--model-dir', default=str(here.parent.parent / 'models' / 'default'),
                    help='where test.txt and SOURCES.md are published')
    ap.add_argument('--packages', action='store_true', help='print the packages to apt-get install, and exit')
    ap.add_argument('--only', help='comma-separated packages to extract (for trying an extractor)')
    args = ap.parse_args()
    if args.packages:
        print(' '.join([s[0] for s in SOURCES] + TOOL_PACKAGES))
        return

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    seen = set()
    outputs = {name: open(work / f'{name}.txt', 'w', encoding='utf-8') for name in ('train', 'valid', 'test')}
    stats = []
    for package, license_text, extract in SOURCES:
        if args.only and package not in args.only.split(','):
            continue
        s = {'package': package, 'version': package_version(package), 'license': license_text,
             'documents': 0, 'bytes': 0, 'train': 0, 'valid': 0, 'test': 0}
        for _, raw in extract():
            kept = []
            for p in raw:
                p = clean_paragraph(p)
                key = hashlib.sha1(p.lower().encode('utf-8')).digest() if p else None
                if p and key not in seen:
                    seen.add(key)
                    kept.append(p)
            if not kept:
                continue
            s['documents'] += 1
            for passage in passages(kept):
                split = split_of(passage)
                size = len(passage.encode('utf-8')) + 1
                outputs[split].write(passage + '\n\n')
                s[split] += size
                s['bytes'] += size
        print(f"{package:24} {s['documents']:6} documents {s['bytes'] / 1e6:8.2f} MB", file=sys.stderr, flush=True)
        stats.append(s)
    for f in outputs.values():
        f.close()
    totals = {k: sum(s[k] for s in stats) for k in ('documents', 'bytes', 'train', 'valid', 'test')}
    print(f"{'total':24} {totals['documents']:6} documents {totals['bytes'] / 1e6:8.2f} MB "
          f"(train {totals['train'] / 1e6:.2f}, valid {totals['valid'] / 1e6:.2f}, test {totals['test'] / 1e6:.2f})",
          file=sys.stderr)
    (work / 'sources.json').write_text(json.dumps({'sources': stats, 'totals': totals}, indent=1) + '\n')
    if not args.only:
        model_dir = Path(args.model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / 'test.txt').write_bytes((work / 'test.txt').read_bytes())
        write_sources_md(model_dir / 'SOURCES.md', stats, totals)


if __name__ == '__main__':
    main()
