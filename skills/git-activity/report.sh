#!/bin/sh
# Commits per author and the most-changed files of the last N days (read-only).
set -eu
days="${1:-7}"
case "$days" in
  ''|*[!0-9]*) echo "days must be a whole number" >&2; exit 2 ;;
esac
since="${days} days ago"
echo "commits per author since ${since}:"
git shortlog -sn --since="$since" HEAD
echo
echo "most-changed files since ${since}:"
git log --since="$since" --name-only --format= | grep -v '^$' | sort | uniq -c | sort -rn | head -n 10
