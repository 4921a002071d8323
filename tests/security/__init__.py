"""The security suite: authentication of every endpoint of both APIs, guest
report isolation between instances, hostile names and paths, secrets kept out
of logs and answers, and guests kept off the host's management ports."""
