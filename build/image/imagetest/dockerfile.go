package imagetest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Stage is what one stage of the Dockerfile declares about the image it makes.
type Stage struct {
	Name       string
	From       string
	Entrypoint []string
	Cmd        []string
	User       string
	Env        []string // KEY=VALUE, in order
	Expose     []string // 53/udp, ...
	Packages   []string // ARG PACKAGES' default: the Debian packages installed
}

// ParseDockerfile reads the stages of a Dockerfile: the instructions that set
// the image config (ENTRYPOINT and CMD in JSON form, USER, ENV KEY=VALUE,
// EXPOSE) and the default of ARG PACKAGES. Other instructions are skipped.
func ParseDockerfile(path string) (map[string]*Stage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	stages := map[string]*Stage{}
	var cur *Stage
	sc := bufio.NewScanner(f)
	n := 0
	var cont string // a line continued with a backslash
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if cont != "" {
			line = cont + " " + line
			cont = ""
		}
		if strings.HasSuffix(line, "\\") {
			cont = strings.TrimSuffix(line, "\\")
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		instr, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		where := fmt.Sprintf("%s:%d", path, n)
		if strings.ToUpper(instr) == "FROM" {
			fields := strings.Fields(rest)
			var from, name string
			for i := 0; i < len(fields); i++ {
				switch {
				case strings.HasPrefix(fields[i], "--"):
				case strings.EqualFold(fields[i], "AS") && i+1 < len(fields):
					name = fields[i+1]
					i++
				default:
					from = fields[i]
				}
			}
			cur = &Stage{Name: name, From: from}
			if name != "" {
				stages[name] = cur
			}
			continue
		}
		if cur == nil {
			continue // ARGs before the first FROM
		}
		switch strings.ToUpper(instr) {
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(rest), &v); err != nil {
				return nil, fmt.Errorf("%s: %s not in JSON form: %w", where, instr, err)
			}
			if strings.ToUpper(instr) == "CMD" {
				cur.Cmd = v
			} else {
				cur.Entrypoint = v
				// As Docker does: an ENTRYPOINT resets the CMD inherited so far.
				cur.Cmd = nil
			}
		case "USER":
			cur.User = rest
		case "ENV":
			if !strings.Contains(rest, "=") || strings.Contains(rest, " ") {
				return nil, fmt.Errorf("%s: ENV must be one KEY=VALUE", where)
			}
			cur.Env = append(cur.Env, rest)
		case "EXPOSE":
			cur.Expose = append(cur.Expose, strings.Fields(rest)...)
		case "ARG":
			if v, ok := strings.CutPrefix(rest, "PACKAGES="); ok {
				cur.Packages = strings.Fields(strings.Trim(v, `"`))
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return stages, nil
}

// ImageConfig is the part of `podman image inspect` the layout check reads.
type ImageConfig struct {
	Entrypoint   []string
	Cmd          []string
	User         string
	Env          []string
	ExposedPorts map[string]struct{}
}

// Mismatches lists how cfg differs from what the stage declares; env holds
// variables the stage must set (the image may carry more, from its base).
func (s *Stage) Mismatches(cfg ImageConfig) []string {
	var out []string
	if !slices.Equal(cfg.Entrypoint, s.Entrypoint) {
		out = append(out, fmt.Sprintf("entrypoint %q, the Dockerfile says %q", cfg.Entrypoint, s.Entrypoint))
	}
	if !slices.Equal(cfg.Cmd, s.Cmd) {
		out = append(out, fmt.Sprintf("cmd %q, the Dockerfile says %q", cfg.Cmd, s.Cmd))
	}
	if cfg.User != s.User {
		out = append(out, fmt.Sprintf("user %q, the Dockerfile says %q", cfg.User, s.User))
	}
	for _, e := range s.Env {
		if !slices.Contains(cfg.Env, e) {
			out = append(out, fmt.Sprintf("env lacks %s (has %q)", e, cfg.Env))
		}
	}
	var ports []string
	for p := range cfg.ExposedPorts {
		ports = append(ports, p)
	}
	want := slices.Clone(s.Expose)
	slices.Sort(ports)
	slices.Sort(want)
	if !slices.Equal(ports, want) {
		out = append(out, fmt.Sprintf("exposed ports %q, the Dockerfile says %q", ports, want))
	}
	return out
}
