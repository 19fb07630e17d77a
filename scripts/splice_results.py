#!/usr/bin/env python3
"""splice_results.py FILE NAME PART — replace the text between <!-- NAME:begin --> and <!-- NAME:end --> in FILE
with the contents of PART (appending the marked section when it is missing). Used by the results scripts."""
import sys

path, name, part = sys.argv[1:4]
body = open(part).read().rstrip() + "\n"
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
try:
    text = open(path).read()
except FileNotFoundError:
    text = "# Results\n"
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    text = head + begin + "\n" + body + end + tail
else:
    text = text.rstrip() + "\n\n" + begin + "\n" + body + end + "\n"
open(path, "w").write(text)
