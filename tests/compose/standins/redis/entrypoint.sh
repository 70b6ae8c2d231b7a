#!/bin/sh
# As the official image: with no config file, let other containers connect (protected mode off).
set -e
if [ "$1" = "redis-server" ]; then
  case "$2" in
    *.conf) ;;
    *) shift; set -- redis-server --protected-mode no "$@" ;;
  esac
fi
exec "$@"
