// Command parleyctl operates a running parleyd through its admin endpoint
// (parleyd --admin, default 127.0.0.1:9222):
//
//	parleyctl status                  the node: version, addresses, readiness, connections, shards
//	parleyctl user ID|+PHONE          an account's devices and what each has queued
//	parleyctl revoke USER DEVICE      revoke a companion device (disconnected, its credential dead)
//	parleyctl drain                   tell every client to go away (GOAWAY), then stop parleyd
//	parleyctl backup --to DIR         an online backup of the node, written to DIR (a new directory)
//
// A backup is restored, with parleyd stopped, by parleyd restore --from
// DIR --data DATADIR (docs/operations.md, "Backups").
//
// --admin (or PARLEY_ADMIN) names the endpoint. It has no authentication:
// it listens on loopback unless the operator chose otherwise, and only
// users of the node's host (or of its private network) reach it.
// parleyctl sends the Parley-Admin header its changing requests need.
//
// parleyctl exits 0 on success, 1 with one line on standard error when
// the node refused or could not be reached, 2 on bad usage. It makes one
// request at a time, on its main goroutine.
package main

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/parley-im/parley/internal/admin"
	"github.com/parley-im/parley/storage"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// usageError is bad usage: exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

const usage = `usage: parleyctl [--admin ADDRESS] COMMAND
commands:
  status                   the node's state
  user ID|+PHONE           an account's devices and queued entries
  revoke USER DEVICE       revoke a companion device
  drain                    GOAWAY to every client, then stop the node
  backup --to DIR          an online backup into the new directory DIR`

func run(args []string, stdout, stderr io.Writer) int {
	err := runErr(args, stdout)
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintln(stdout, usage)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "parleyctl: "+oneLine(err.Error())+" (parleyctl -help)")
		return 2
	}
	fmt.Fprintln(stderr, "parleyctl: "+oneLine(err.Error()))
	return 1
}

func runErr(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("parleyctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addr := fs.String("admin", env("PARLEY_ADMIN", "127.0.0.1:9222"), "admin endpoint `address` (host:port)")
	asJSON := fs.Bool("json", false, "print the node's answer as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() == 0 {
		return usageError{"no command"}
	}
	if *addr == "" {
		return usageError{"--admin is empty"}
	}
	c := &client{base: "http://" + *addr, http: &http.Client{}}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "status":
		if len(rest) != 0 {
			return usageError{"status takes no argument"}
		}
		var st admin.Status
		if err := c.get("/status", &st); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, st)
		}
		printStatus(stdout, st)
		return nil
	case "user":
		if len(rest) != 1 {
			return usageError{"user takes one argument: a user id or a phone number (+…)"}
		}
		var info storage.UserInfo
		if err := c.get("/users/"+url.PathEscape(rest[0]), &info); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, info)
		}
		printUser(stdout, info)
		return nil
	case "revoke":
		if len(rest) != 2 {
			return usageError{"revoke takes two arguments: USER DEVICE"}
		}
		user, err1 := strconv.ParseUint(rest[0], 10, 64)
		device, err2 := strconv.ParseUint(rest[1], 10, 32)
		if err1 != nil || err2 != nil || user == 0 {
			return usageError{fmt.Sprintf("revoke %s %s: want a user id and a device id (numbers; parleyctl user lists them)", rest[0], rest[1])}
		}
		if err := c.post(fmt.Sprintf("/users/%d/devices/%d/revoke", user, device), nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked device %d of user %d\n", device, user)
		return nil
	case "drain":
		if len(rest) != 0 {
			return usageError{"drain takes no argument"}
		}
		if err := c.post("/drain", nil); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "draining: every client is told to go away, then parleyd stops")
		return nil
	case "backup":
		bfs := flag.NewFlagSet("backup", flag.ContinueOnError)
		bfs.SetOutput(io.Discard)
		to := bfs.String("to", "", "new `directory` for the backup")
		if err := bfs.Parse(rest); err != nil {
			return usageError{"backup: " + err.Error()}
		}
		if *to == "" || bfs.NArg() > 0 {
			return usageError{"backup takes --to DIR"}
		}
		m, err := c.backup(*to)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "backup of %d shards written to %s (shards paused %.1f ms; %d media blobs)\n", m.Shards, *to, m.PausedMS, m.MediaBlobs)
		return nil
	}
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}

// client speaks to the admin endpoint.
type client struct {
	base string
	http *http.Client
}

// get reads path's JSON answer into v.
func (c *client) get(path string, v any) error {
	resp, err := c.http.Get(c.base + path)
	if err != nil {
		return reachError(c.base, err)
	}
	defer resp.Body.Close()
	if err := answerError(resp); err != nil {
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("reading the answer of %s: %w", path, err)
	}
	return nil
}

// post sends a changing request; v, if not nil, receives the JSON answer.
func (c *client) post(path string, v any) error {
	resp, err := c.send(path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if v != nil {
		return json.NewDecoder(resp.Body).Decode(v)
	}
	return nil
}

func (c *client) send(path string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(admin.HeaderMutate, "parleyctl")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, reachError(c.base, err)
	}
	if err := answerError(resp); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp, nil
}

// backup asks for a backup and unpacks it into the new directory to. On
// failure to is removed.
func (c *client) backup(to string) (m manifest, err error) {
	if _, err := os.Lstat(to); err == nil {
		return m, fmt.Errorf("%s exists: back up into a new directory", to)
	}
	if err := os.MkdirAll(to, 0o700); err != nil {
		return m, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(to)
		}
	}()
	resp, err := c.send("/backup")
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	if err := untar(resp.Body, to); err != nil {
		if msg := resp.Trailer.Get(admin.BackupErrorTrailer); msg != "" {
			return m, fmt.Errorf("backup failed on the node: %s", msg)
		}
		return m, fmt.Errorf("backup: %w", err)
	}
	if msg := resp.Trailer.Get(admin.BackupErrorTrailer); msg != "" {
		return m, fmt.Errorf("backup failed on the node: %s", msg)
	}
	b, err := os.ReadFile(filepath.Join(to, "BACKUP.json"))
	if err != nil {
		return m, errors.New("backup incomplete: the node sent no BACKUP.json")
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("backup: BACKUP.json: %w", err)
	}
	return m, nil
}

// manifest is what parleyctl reads of a backup's BACKUP.json
// (node.Manifest).
type manifest struct {
	Shards     int     `json:"shards"`
	PausedMS   float64 `json:"paused_ms"`
	MediaBlobs int     `json:"media_blobs"`
}

// untar unpacks directories and regular files from r under dir, refusing
// any name that would leave it.
func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.FromSlash(strings.TrimSuffix(hdr.Name, "/"))
		if !filepath.IsLocal(name) {
			return fmt.Errorf("unsafe name %q in the archive", hdr.Name)
		}
		path := filepath.Join(dir, name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return err
			}
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unexpected entry %q (type %c) in the archive", hdr.Name, hdr.Typeflag)
		}
	}
}

// reachError says the endpoint could not be reached, and how to name
// another.
func reachError(base string, err error) error {
	return fmt.Errorf("cannot reach the admin endpoint at %s (is parleyd running with --admin there? --admin or PARLEY_ADMIN names another): %v",
		strings.TrimPrefix(base, "http://"), errors.Unwrap(err))
}

// answerError turns an error answer into an error with the node's reason.
func answerError(resp *http.Response) error {
	if resp.StatusCode < 300 {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var e admin.ErrorBody
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
	}
	return fmt.Errorf("the node answered %s: %s", resp.Status, strings.TrimSpace(string(b)))
}

func printStatus(w io.Writer, st admin.Status) {
	ready := "ready"
	if !st.Ready {
		ready = "NOT READY: " + strings.Join(st.NotReady, "; ")
	}
	fmt.Fprintf(w, "parleyd %s, up %s, %s\n", st.Version, (time.Duration(st.UptimeS) * time.Second).String(), ready)
	fmt.Fprintf(w, "clients    %s (%d connections, %d logged in)\n", st.Addr, st.Connections, st.Authenticated)
	if st.MediaURL != "" {
		fmt.Fprintf(w, "media      %s\n", st.MediaURL)
	}
	if st.Fingerprint != "" {
		fmt.Fprintf(w, "certificate SHA-256 %s\n", st.Fingerprint)
	}
	fmt.Fprintf(w, "data       %s (%d MiB free%s)\n", st.DataDir, st.FreeBytes>>20, map[bool]string{true: ", BELOW THE RESERVE", false: ""}[st.DiskFull])
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "shard\tserving\tqueued ops\toutbox unconfirmed\tcommits")
	for _, s := range st.Shards {
		fmt.Fprintf(tw, "%d\t%v\t%d\t%d\t%d\n", s.ID, s.Serving, s.Queue, s.Unconfirmed, s.Commits)
	}
	tw.Flush()
}

func printUser(w io.Writer, u storage.UserInfo) {
	fmt.Fprintf(w, "user %d, %s, inbox head %d\n", u.User, u.Phone, u.Head)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "device\tname\tcreated\tstate\tcursor\tqueued")
	for _, d := range u.Devices {
		state := "companion"
		switch {
		case d.Revoked:
			state = "revoked"
		case d.Primary:
			state = "primary"
		}
		created := time.UnixMilli(int64(d.CreatedMS)).UTC().Format(time.DateTime)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\n", d.ID, d.Name, created, state, d.Cursor, d.Queued)
	}
	tw.Flush()
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// oneLine joins the lines of s, so an error is one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
