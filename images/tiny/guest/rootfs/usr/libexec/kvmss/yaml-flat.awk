# Flatten the block-style YAML that PyYAML's safe_dump writes (NoCloud
# meta-data and network-config v2) into one "path=value" line per scalar:
#
#   ethernets:                         ethernets.eth0.match.macaddress=52:54:00:12:34:56
#     eth0:                     ->     ethernets.eth0.addresses.0=10.77.0.5/24
#       match:                         ethernets.eth0.routes.0.to=default
#         macaddress: '52:54:...'      ethernets.eth0.routes.0.via=10.77.0.1
#       addresses:
#       - 10.77.0.5/24
#       routes:
#       - to: default
#         via: 10.77.0.1
#
# Keys may come in any order, sequences may be indented or not, scalars may
# be plain, 'single' or "double" quoted. Flow collections ("[]", "{}") are
# passed through as the value. Anchors, multi-line scalars and comments
# after values are not supported (safe_dump writes none of them here).
#
# Each open container is a frame with a level: a key at indent i has level
# 2i, a sequence item whose dash is at indent i has level 2i+1, so an
# indentless sequence ("addresses:" and "- x" at the same indent) nests
# under its key, and a new line closes every frame at its level or deeper.

function unquote(v,    q) {
    sub(/^[ \t]+/, "", v)
    sub(/[ \t]+$/, "", v)
    q = substr(v, 1, 1)
    if (length(v) >= 2 && q == "'" && substr(v, length(v), 1) == "'") {
        v = substr(v, 2, length(v) - 2)
        gsub(/''/, "'", v)
    } else if (length(v) >= 2 && q == "\"" && substr(v, length(v), 1) == "\"") {
        v = substr(v, 2, length(v) - 2)
        gsub(/\\"/, "\"", v)
        gsub(/\\\\/, "\\", v)
    }
    return v
}

function close_to(level) {
    while (depth > 0 && lvl[depth] >= level)
        depth--
}

function path(    p, d) {
    p = ""
    for (d = 1; d <= depth; d++)
        p = (p == "" ? name[d] : p "." name[d])
    return p
}

function emit(key, value,    p) {
    p = path()
    print (p == "" ? key : p "." key) "=" value
}

# A "key: value" or "key:" at indent `ind`.
function mapping(s, ind,    k, v, pos) {
    pos = index(s, ": ")
    if (pos > 0) {
        k = substr(s, 1, pos - 1)
        v = substr(s, pos + 2)
    } else if (substr(s, length(s), 1) == ":") {
        k = substr(s, 1, length(s) - 1)
        v = ""
    } else {
        return 0
    }
    k = unquote(k)
    close_to(2 * ind)
    sub(/^[ \t]+/, "", v)
    if (v == "") {
        depth++
        lvl[depth] = 2 * ind
        name[depth] = k
        items[depth] = 0
    } else {
        emit(k, unquote(v))
    }
    return 1
}

BEGIN { depth = 0 }

{
    sub(/\r$/, "")
    line = $0
    if (line ~ /^[ \t]*(#.*)?$/ || line ~ /^(---|\.\.\.)[ \t]*$/)
        next
    match(line, /^ */)
    ind = RLENGTH
    s = substr(line, ind + 1)
    if (s == "-" || substr(s, 1, 2) == "- ") {
        close_to(2 * ind + 1)
        idx = (depth > 0 ? items[depth]++ : top_items++)
        depth++
        lvl[depth] = 2 * ind + 1
        name[depth] = idx
        items[depth] = 0
        rest = substr(s, 3)
        sub(/^ +/, "", rest)
        if (rest == "")
            next
        # "- key: value" opens a mapping whose keys sit two columns right.
        if (!mapping(rest, ind + 2 + (length(s) - 2 - length(rest)))) {
            p = path()
            depth--
            print p "=" unquote(rest)
        }
        next
    }
    if (!mapping(s, ind))
        print "yaml-flat: line " NR " not understood" > "/dev/stderr"
}
