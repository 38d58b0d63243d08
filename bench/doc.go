// Package bench holds the measuring parts of `make bench` (cmd/nodebench):
// reading dnsperf's report and a process's CPU time and memory from /proc,
// the statistics over interleaved rounds (min, median, max, ratios between
// peers, and each peer's figures over a baseline peer's round by round), the
// notes on runs the load side bounded, and the JSON, Markdown and PNG
// outputs. It does no networking; the lab (internal/lab) runs the servers
// and load generators.
package bench
