package plugins

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// corefileBlocks returns the ```corefile / ~~~ corefile examples of a README.
func corefileBlocks(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)(?:~~~|```) ?corefile\n(.*?)(?:~~~|```)")
	var out []string
	for _, m := range re.FindAllStringSubmatch(string(data), -1) {
		out = append(out, m[1])
	}
	return out
}

// TestExamplesParse: every Corefile the project shows its users is accepted
// by this build, as `coredns -conf` would accept it.
func TestExamplesParse(t *testing.T) {
	t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", "198.18.0.11")
	// bin/coredns sets the cache capacities Corefile.example references.
	for _, v := range []string{"NODELOCAL_CACHE_SUCCESS", "NODELOCAL_CACHE_DENIAL", "NODELOCAL_CACHE_OTHER"} {
		t.Setenv(v, "9984")
	}
	files := map[string]string{}
	readmes, _ := filepath.Glob("../../plugin/*/README.md")
	for _, readme := range readmes {
		blocks := corefileBlocks(t, readme)
		if len(blocks) == 0 {
			t.Errorf("%s has no corefile examples", readme)
		}
		for i, b := range blocks {
			files[readme+" example "+string(rune('1'+i))] = b
		}
	}
	example, err := os.ReadFile("../../Corefile.example")
	if err != nil {
		t.Fatal(err)
	}
	files["Corefile.example"] = string(example)

	for name, corefile := range files {
		if err := Validate(name, []byte(corefile)); err != nil {
			t.Errorf("%s does not parse: %v", name, err)
		}
	}
}

func TestValidateRejects(t *testing.T) {
	t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", "198.18.0.11")
	err := Validate("Corefile", []byte(".:53 {\n  nodelocal {\n    localip 169.254.20.10\n    healthport 80800\n  }\n}\n"))
	if err == nil || !strings.Contains(err.Error(), `Corefile:4 - Error during parsing: healthport "80800" is not a port`) {
		t.Errorf("Expected the file, line and value in the error, got %v", err)
	}
	// A plugin left out of the build is unknown, not silently accepted.
	err = Validate("Corefile", []byte(".:53 {\n  kubernetes cluster.local\n}\n"))
	if err == nil || !strings.Contains(err.Error(), "kubernetes") {
		t.Errorf("Expected an error for a plugin the build does not have, got %v", err)
	}
}
