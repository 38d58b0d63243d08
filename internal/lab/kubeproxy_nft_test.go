package lab

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestKubeProxyNftLoads: the nftables-mode rules are what nft accepts
// (checked with nft -c in a throwaway namespace).
func TestKubeProxyNftLoads(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("nft -c needs root")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft missing: `make deps` installs it as root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := "nltest-kpnft"
	if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
		t.Fatal(err)
	}
	defer run(context.Background(), "ip", "netns", "del", ns)
	if out, err := nsRunInput(ctx, ns, kubeProxyNft(), "nft", "-f", "-"); err != nil {
		t.Fatalf("nft rejects kube-proxy's nftables rules: %v\n%s\n%s", err, out, kubeProxyNft())
	}
}
