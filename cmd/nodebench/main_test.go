package main

import (
	"os"
	"strings"
	"testing"
)

func TestWithout(t *testing.T) {
	b, err := os.ReadFile("../../Corefile.example")
	if err != nil {
		t.Fatal(err)
	}
	got := without("nodelocal", "hitpath")(string(b))
	for _, line := range strings.Split(got, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && (f[0] == "nodelocal" || f[0] == "localip" || f[0] == "upstreamsvc" || f[0] == "hitpath") {
			t.Errorf("The nodelocal or hitpath directive is still there: %q", line)
		}
	}
	if strings.Count(got, "{") != strings.Count(got, "}") {
		t.Errorf("Braces unbalanced after removing nodelocal:\n%s", got)
	}
	// Everything else stays, line for line.
	for _, want := range []string{"bind 169.254.20.10 198.18.0.10", "force_tcp", "lameduck 5s", "success {$NODELOCAL_CACHE_SUCCESS} 30", "forward . /etc/resolv.conf"} {
		if !strings.Contains(got, want) {
			t.Errorf("Lost %q:\n%s", want, got)
		}
	}
	// Removed: the lines of each nodelocal block or one-line directive.
	want, inBlock := 0, false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case inBlock:
			want++
			inBlock = !(len(f) > 0 && f[0] == "}")
		case len(f) > 0 && (f[0] == "nodelocal" || f[0] == "hitpath"):
			want++
			inBlock = strings.Contains(line, "{")
		}
	}
	if n := len(strings.Split(string(b), "\n")) - len(strings.Split(got, "\n")); n != want {
		t.Errorf("Removed %d lines, want %d (the nodelocal blocks and directives, the hitpath lines)", n, want)
	}
}

func TestLabRuns(t *testing.T) {
	got := labRuns([]string{"/var/run/netns/nl-1499a1-dns1", "/var/run/netns/nl-1499a1-node", "/etc/netns/nl-c5f6b0-pod1"})
	if strings.Join(got, ",") != "nl-1499a1,nl-c5f6b0" {
		t.Errorf("Got %q, want each run once: nl-1499a1, nl-c5f6b0", got)
	}
}
