#!/bin/sh
# Stockade demo "exploit kit": a harmless stand-in. Its sha256 is what the demo's
# sha256-list feed lists, so writing this file anywhere in a watched container is a
# threat alert. It does nothing but print.
echo "stockade-demo kit: pretending to install a backdoor (nothing is installed)"
