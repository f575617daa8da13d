package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestCommandDispatch(t *testing.T) {
	t.Setenv("GOSVC_ADMIN_TOKEN", "")
	cases := []struct {
		args []string
		code int
		out  string
	}{
		{nil, 2, "usage: gosvc"},
		{[]string{"nope"}, 2, `unknown command "nope"`},
		{[]string{"version"}, 0, "gosvc go1."},
		{[]string{"help"}, 0, "loadgen"},
		{[]string{"serve", "--no-such-flag"}, 2, "flag provided but not defined"},
		{[]string{"serve", "--gomaxprocs", "5000"}, 2, "gomaxprocs=5000 is out of range: allowed 1..1024"},
		{[]string{"loadgen"}, 2, "--url is required"},
		{[]string{"help"}, 0, "proxy"},
		{[]string{"proxy", "--upstream", "ftp://x"}, 2, "want http(s)://host:port URLs"},
		{[]string{"proxy", "--admin", "0.0.0.0:0"}, 2, "refusing to serve the admin API on non-loopback"},
		{[]string{"loadgen", "--url", "http://127.0.0.1:1/", "--ramp", "5"}, 2, "want start,step,step-seconds"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := run(c.args, strings.NewReader(""), &out, &errb)
		if code != c.code || !strings.Contains(out.String()+errb.String(), c.out) {
			t.Errorf("gosvc %q: exit %d, output %q; want exit %d containing %q", c.args, code, out.String()+errb.String(), c.code, c.out)
		}
	}
}

func TestServeRefusesAShortToken(t *testing.T) {
	t.Setenv("GOSVC_ADMIN_TOKEN", "abcde")
	var out, errb bytes.Buffer
	code := run([]string{"serve", "--addr", "127.0.0.1:0"}, strings.NewReader(""), &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "GOSVC_ADMIN_TOKEN: the admin token is 5 bytes") ||
		!strings.Contains(errb.String(), "openssl rand -hex 32") || out.Len() != 0 {
		t.Fatalf("5-byte token: exit %d, stdout %q, stderr %q; want exit 2 naming GOSVC_ADMIN_TOKEN and the fix", code, out.String(), errb.String())
	}
}
