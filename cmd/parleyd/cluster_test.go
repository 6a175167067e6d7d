package main

import (
	"flag"
	"io"
	"testing"
	"time"
)

// TestClusterFlags: --cluster and its flags give the node's cluster
// configuration; a bad combination is refused with one line.
func TestClusterFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		err  string
	}{
		{nil, ""},
		{[]string{"--cluster", "--node-id", "2", "--link-listen", ":7000", "--etcd", "http://a:2379, http://b:2379"}, ""},
		{[]string{"--cluster", "--node-id", "1", "--link-listen", ":7000", "--etcd-embed", "/tmp/etcd"}, ""},
		{[]string{"--node-id", "3"}, "--node-id needs --cluster"},
		{[]string{"--etcd", "http://a:2379"}, "--etcd needs --cluster"},
		{[]string{"--cluster", "--link-listen", ":7000", "--etcd", "http://a:2379"}, "--cluster needs --node-id"},
		{[]string{"--cluster", "--node-id", "0", "--link-listen", ":7000", "--etcd", "http://a:2379"}, `--node-id "0": want a number from 1 to 4294967295`},
		{[]string{"--cluster", "--node-id", "1", "--etcd", "http://a:2379"}, "--cluster needs --link-listen"},
		{[]string{"--cluster", "--node-id", "1", "--link-listen", ":7000"}, "--cluster needs one of --etcd and --etcd-embed"},
		{[]string{"--cluster", "--node-id", "1", "--link-listen", ":7000", "--etcd", "x", "--etcd-embed", "/d"}, "--cluster needs one of --etcd and --etcd-embed"},
		{[]string{"--cluster", "--node-id", "1", "--link-listen", ":7000", "--etcd", "x", "--lease-ttl", "1s"}, "--lease-ttl 1s: want at least 2s"},
		{[]string{"--link-dial", "2=a:1"}, "--link-dial needs --cluster"},
		{[]string{"--cluster", "--node-id", "1", "--link-listen", ":7000", "--etcd", "x", "--link-dial", "2=a:1,a:2"}, `--link-dial "a:2": want id=host:port, the id 1 or more`},
		{[]string{"--cluster", "--node-id", "1", "--link-listen", ":7000", "--etcd", "x", "--link-dial", "0=a:2"}, `--link-dial "0=a:2": want id=host:port, the id 1 or more`},
	} {
		fs := flag.NewFlagSet("parleyd", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f, err := addClusterFlags(fs)
		if err != nil {
			t.Fatal(err)
		}
		if err := fs.Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		c, err := f.config(fs)
		switch {
		case tt.err != "":
			if err == nil || err.Error() != tt.err {
				t.Errorf("%v: error %v, want %q", tt.args, err, tt.err)
			}
		case err != nil:
			t.Errorf("%v: %v", tt.args, err)
		case len(tt.args) == 0 && c != nil:
			t.Errorf("no flags gave a cluster config %+v", c)
		case len(tt.args) > 0 && (c == nil || c.ID == 0 || c.LinkAddr != ":7000" || len(c.Etcd)+len(c.EtcdDir) == 0):
			t.Errorf("%v gave %+v", tt.args, c)
		}
	}
	fs := flag.NewFlagSet("parleyd", flag.ContinueOnError)
	f, _ := addClusterFlags(fs)
	_ = fs.Parse([]string{"--cluster", "--node-id", "2", "--link-listen", ":7000", "--etcd", "http://a:2379, http://b:2379"})
	if c, _ := f.config(fs); len(c.Etcd) != 2 || c.Etcd[1] != "http://b:2379" {
		t.Errorf("etcd endpoints %q", c.Etcd)
	}
	fs = flag.NewFlagSet("parleyd", flag.ContinueOnError)
	f, _ = addClusterFlags(fs)
	_ = fs.Parse([]string{"--cluster", "--node-id", "1", "--link-listen", ":7000", "--etcd", "x", "--link-dial", "2=127.0.0.1:7002, 3=127.0.0.1:7003"})
	if c, err := f.config(fs); err != nil || len(c.PeerLinks) != 2 || c.PeerLinks[2] != "127.0.0.1:7002" || c.PeerLinks[3] != "127.0.0.1:7003" {
		t.Errorf("--link-dial gave %v, %v", c, err)
	}
}

// TestClusterEnvironment: PARLEY_LEASE_TTL and PARLEY_MIN_NODES set
// --lease-ttl and --min-nodes; a value that does not parse is an error
// naming the variable and the value, not a range error on 0.
func TestClusterEnvironment(t *testing.T) {
	args := []string{"--cluster", "--node-id", "1", "--link-listen", ":7000", "--etcd", "x"}
	t.Setenv("PARLEY_LEASE_TTL", "7s")
	t.Setenv("PARLEY_MIN_NODES", "3")
	fs := flag.NewFlagSet("parleyd", flag.ContinueOnError)
	f, err := addClusterFlags(fs)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if c, err := f.config(fs); err != nil || c.LeaseTTL != 7*time.Second || c.MinNodes != 3 {
		t.Fatalf("from the environment: %+v, %v; want a 7s lease and 3 nodes", c, err)
	}
	for _, tt := range []struct{ name, value, want string }{
		{"PARLEY_LEASE_TTL", "5", `PARLEY_LEASE_TTL="5" is not a duration (like 60s)`},
		{"PARLEY_MIN_NODES", "two", `PARLEY_MIN_NODES="two" is not a number`},
	} {
		t.Setenv("PARLEY_LEASE_TTL", "7s")
		t.Setenv("PARLEY_MIN_NODES", "3")
		t.Setenv(tt.name, tt.value)
		if _, err := addClusterFlags(flag.NewFlagSet("parleyd", flag.ContinueOnError)); err == nil || err.Error() != tt.want {
			t.Errorf("%s=%s: error %v, want %q", tt.name, tt.value, err, tt.want)
		}
	}
}
