package admin

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/parley-im/parley/storage"
)

// Operator is what the endpoint asks of its node for /status, /readyz,
// /users, /drain and /backup. internal/node implements it; the node is
// above this package, hence the interface.
type Operator interface {
	// Status returns the node's state.
	Status() Status
	// NotReady returns why the node should get no new clients; nil: ready.
	NotReady() []string
	// Backup writes an online backup to dir, which must not exist.
	Backup(dir string) error
	// Drain tells every client to go away and stops the node.
	Drain()
	// User reads an account (by id, or with user 0 by phone).
	User(user uint64, phone string) (storage.UserInfo, error)
	// RevokeDevice revokes a device of a user, as its primary would.
	RevokeDevice(ctx context.Context, user uint64, device uint32) error
}

// Status is a node's state, as GET /status answers it (JSON).
type Status struct {
	Version       string        `json:"version"`
	Started       time.Time     `json:"started"`
	UptimeS       float64       `json:"uptime_s"`
	Addr          string        `json:"addr"`
	Admin         string        `json:"admin,omitempty"`
	MediaURL      string        `json:"media_url,omitempty"`
	DataDir       string        `json:"data_dir"`
	Fingerprint   string        `json:"fingerprint,omitempty"`
	Ready         bool          `json:"ready"`
	NotReady      []string      `json:"not_ready,omitempty"`
	Connections   int64         `json:"connections"`
	Authenticated int64         `json:"authenticated"`
	FreeBytes     uint64        `json:"free_bytes"`
	DiskFull      bool          `json:"disk_full"`
	Shards        []ShardStatus `json:"shards"`
}

// ShardStatus is one shard in a Status.
type ShardStatus struct {
	ID          uint16 `json:"id"`
	Serving     bool   `json:"serving"`
	Queue       int    `json:"queue"`
	Unconfirmed uint64 `json:"outbox_unconfirmed"`
	Commits     uint64 `json:"commits"`
}

// HeaderMutate must be sent, with any value, with every request that
// changes something (POST /drain, /backup, /users/…/revoke): a web page
// the operator's browser shows cannot send it to a loopback endpoint
// without a CORS preflight, which the endpoint never grants.
const HeaderMutate = "Parley-Admin"

// BackupErrorTrailer is the HTTP trailer that carries an error met after
// POST /backup started streaming.
const BackupErrorTrailer = "Parley-Backup-Error"

// handleOps adds the operator's endpoints to mux.
func handleOps(mux *http.ServeMux, op Operator, tempDir string) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if why := op.NotReady(); len(why) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: "+strings.Join(why, "; "))
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, op.Status())
	})
	mux.HandleFunc("GET /users/{user}", func(w http.ResponseWriter, r *http.Request) {
		user, phone, err := parseUser(r.PathValue("user"))
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		info, err := op.User(user, phone)
		if err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, info)
	})
	mux.HandleFunc("POST /users/{user}/devices/{device}/revoke", mutating(func(w http.ResponseWriter, r *http.Request) {
		user, err := strconv.ParseUint(r.PathValue("user"), 10, 64)
		if err != nil || user == 0 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("admin: user %q: want a user id", r.PathValue("user")))
			return
		}
		device, err := strconv.ParseUint(r.PathValue("device"), 10, 32)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("admin: device %q: want a device id", r.PathValue("device")))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		if err := op.RevokeDevice(ctx, user, uint32(device)); err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"user": user, "device": device, "revoked": true})
	}))
	mux.HandleFunc("POST /drain", mutating(func(w http.ResponseWriter, _ *http.Request) {
		op.Drain()
		writeJSON(w, http.StatusAccepted, map[string]any{"draining": true})
	}))
	mux.HandleFunc("POST /backup", mutating(func(w http.ResponseWriter, _ *http.Request) {
		serveBackup(w, op, tempDir)
	}))
}

// mutating refuses a request without HeaderMutate.
func mutating(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(HeaderMutate) == "" {
			writeError(w, http.StatusForbidden, fmt.Errorf("admin: %s header missing", HeaderMutate))
			return
		}
		h(w, r)
	}
}

// serveBackup takes a backup into a fresh directory under tempDir and
// streams it as a tar archive, the manifest last, then deletes it. A
// failure after the first byte is reported in BackupErrorTrailer, and the
// archive then lacks the manifest.
func serveBackup(w http.ResponseWriter, op Operator, tempDir string) {
	if err := os.MkdirAll(tempDir, 0o700); err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Errorf("admin: backup: %w", err))
		return
	}
	dir, err := os.MkdirTemp(tempDir, "backup-")
	if err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Errorf("admin: backup: %w", err))
		return
	}
	defer os.RemoveAll(dir)
	root := filepath.Join(dir, "b")
	if err := op.Backup(root); err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	w.Header().Set("Trailer", BackupErrorTrailer)
	w.Header().Set("Content-Type", "application/x-tar")
	err = WriteTar(w, root, "BACKUP.json")
	if err != nil {
		w.Header().Set(BackupErrorTrailer, err.Error())
	}
}

// WriteTar writes the tree under root to w as a tar archive of
// directories and regular files (names relative to root, with slashes),
// the file named last (if present) at the end.
func WriteTar(w io.Writer, root, last string) error {
	tw := tar.NewWriter(w)
	add := func(path string, d fs.DirEntry) error {
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		hdr.Uname, hdr.Gname, hdr.Uid, hdr.Gid = "", "", 0, 0
		if d.IsDir() {
			hdr.Name += "/"
			return tw.WriteHeader(hdr)
		}
		if !info.Mode().IsRegular() {
			return fmt.Errorf("admin: %s: not a regular file", path)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	}
	var lastEntry fs.DirEntry
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == filepath.Join(root, last) {
			lastEntry = d
			return nil
		}
		return add(path, d)
	})
	if err == nil && lastEntry != nil {
		err = add(filepath.Join(root, last), lastEntry)
	}
	if err != nil {
		return fmt.Errorf("admin: backup: %w", err)
	}
	return tw.Close()
}

// parseUser reads a user id, or a phone number in E.164 (+ and digits).
func parseUser(s string) (user uint64, phone string, err error) {
	if strings.HasPrefix(s, "+") {
		if len(s) < 4 || len(s) > 16 || strings.Trim(s[1:], "0123456789") != "" {
			return 0, "", fmt.Errorf("admin: %q: want a user id or a phone number in E.164 (+ and 3 to 15 digits)", s)
		}
		return 0, s, nil
	}
	user, err = strconv.ParseUint(s, 10, 64)
	if err != nil || user == 0 {
		return 0, "", fmt.Errorf("admin: %q: want a user id or a phone number in E.164 (+ and 3 to 15 digits)", s)
	}
	return user, "", nil
}

// Sentinels an Operator wraps in its errors, so the endpoint answers
// with the right status.
var (
	// ErrUnavailable: the node is shutting down (503).
	ErrUnavailable = errors.New("admin: node unavailable")
	// ErrRefused: the request is understood but cannot be done (422).
	ErrRefused = errors.New("admin: refused")
)

// statusOf maps an Operator's error to an HTTP status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, storage.ErrNoUser):
		return http.StatusNotFound
	case errors.Is(err, ErrRefused):
		return http.StatusUnprocessableEntity
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// ErrorBody is the JSON body of an error answer.
type ErrorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, ErrorBody{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
