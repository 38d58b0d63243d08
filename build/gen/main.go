// Command gen turns plugin.cfg into the custom CoreDNS build's directive list
// and plugin imports (build/plugins/zdirectives.go and build/plugins/zplugin.go).
//
// It is run by `go generate ./build/plugins` (and `make generate`). Unlike
// CoreDNS's own directives_generate.go it writes both lists into one package
// of this project, so the build never imports github.com/coredns/coredns/core/plugin
// (which pulls in every stock plugin and their cloud SDKs).
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
)

func main() {
	cfg := flag.String("cfg", "plugin.cfg", "plugin list to read")
	out := flag.String("out", ".", "directory of the generated package")
	flag.Parse()

	files, err := generateFromFile(*cfg)
	if err != nil {
		log.Fatal(err)
	}
	for name, content := range files {
		path := filepath.Join(*out, name)
		if err := os.WriteFile(path, content, 0o644); err != nil {
			log.Fatalf("write %s: %v", path, err)
		}
		fmt.Fprintf(os.Stderr, "gen: wrote %s\n", path)
	}
}

// generateFromFile reads the plugin list at path and returns the generated
// files keyed by their base name.
func generateFromFile(path string) (map[string][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	plugins, err := parse(data, path)
	if err != nil {
		return nil, err
	}
	return render(plugins)
}
