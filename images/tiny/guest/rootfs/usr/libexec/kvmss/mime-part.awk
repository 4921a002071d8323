# Print the body of the first part of Content-Type TYPE in a MIME multipart
# document (the NoCloud user-data the host agent writes: a text/cloud-config
# part, then a text/x-shellscript part), as cloud-init would hand it to its
# handler:
#
#   awk -v type=text/x-shellscript -f mime-part.awk user-data > script
#
# Exit status: 0 printed, 1 no such part (or not multipart), 2 the part is
# base64 or quoted-printable (the agent writes 7bit; this reader has no
# decoder). Header lines may end in CRLF; folded header lines are read as
# their own lines, which is enough to find the boundary parameter.

function header_value(line,    v) {
    v = line
    sub(/^[^:]*:[ \t]*/, "", v)
    sub(/[ \t]*;.*$/, "", v)
    return tolower(v)
}

BEGIN {
    state = "head"
    boundary = ""
    status = 1
    type = tolower(type)
}

{
    line = $0
    sub(/\r$/, "", line)
}

state == "head" {
    if (line == "") {
        if (boundary == "") {
            exit
        }
        state = "preamble"
        next
    }
    lower = tolower(line)
    if (match(lower, /boundary="[^"]+"/)) {
        boundary = substr(line, RSTART + 10, RLENGTH - 11)
    } else if (match(lower, /boundary=[^ \t;]+/)) {
        boundary = substr(line, RSTART + 9, RLENGTH - 9)
    }
    next
}

line == "--" boundary || line == "--" boundary "--" {
    if (state == "body" && wanted) {
        exit
    }
    if (line == "--" boundary "--") {
        exit
    }
    state = "part-head"
    ctype = ""
    encoding = "7bit"
    next
}

state == "part-head" {
    if (line == "") {
        state = "body"
        wanted = (ctype == type)
        if (wanted && (encoding == "base64" || encoding == "quoted-printable")) {
            status = 2
            exit
        }
        if (wanted) {
            status = 0
        }
        next
    }
    if (tolower(line) ~ /^content-type:/) {
        ctype = header_value(line)
    } else if (tolower(line) ~ /^content-transfer-encoding:/) {
        encoding = header_value(line)
    }
    next
}

state == "body" && wanted {
    print line
}

END {
    exit status
}
