#!/bin/sh
echo "${APP_GREETING:-hi}, $1 (app @VERSION@)"
