package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// fileRef is the body of a message that carries a file: what the
// recipient needs to fetch, check and decrypt it. Its JSON layout is
// documented in doc.go; the server never reads it.
type fileRef struct {
	Version int    `json:"v"`
	ID      string `json:"id"`     // media id, 32 hex digits
	Key     string `json:"key"`    // AES-256 key, 32 bytes, unpadded base64url
	Size    int64  `json:"size"`   // bytes of ciphertext, as uploaded
	SHA256  string `json:"sha256"` // of the ciphertext, 64 hex digits
	Name    string `json:"name"`   // the file's name, without directories
	MIME    string `json:"mime"`   // its media type
}

// fileRefVersion is the layout this command writes and reads.
const fileRefVersion = 1

// maxKeptFiles is how many received file references a profile keeps for
// save-file.
const maxKeptFiles = 64

// attrFile keys a received file reference in the profile: + inbox seq.
const attrFile = "file:"

// parseFileRef decodes and checks a message body as a file reference.
func parseFileRef(body []byte) (fileRef, bool) {
	var r fileRef
	if err := json.Unmarshal(body, &r); err != nil || r.Version != fileRefVersion {
		return fileRef{}, false
	}
	id, err1 := hex.DecodeString(r.ID)
	key, err2 := base64.RawURLEncoding.DecodeString(r.Key)
	sum, err3 := hex.DecodeString(r.SHA256)
	if err1 != nil || err2 != nil || err3 != nil || len(id) != protocol.MediaIDLen || len(key) != 32 ||
		len(sum) != sha256.Size || r.Size < sealOverhead || !utf8.ValidString(r.Name) {
		return fileRef{}, false
	}
	return r, true
}

func (r fileRef) mediaID() client.MediaID {
	id, _ := hex.DecodeString(r.ID)
	return client.MediaID(id)
}

func (r fileRef) key() []byte {
	k, _ := base64.RawURLEncoding.DecodeString(r.Key)
	return k
}

func (r fileRef) sum() [32]byte {
	s, _ := hex.DecodeString(r.SHA256)
	return [32]byte(s)
}

// plainSize is the size of the decrypted file.
func (r fileRef) plainSize() int64 {
	chunks := (r.Size + sealChunk + sealOverhead - 1) / (sealChunk + sealOverhead)
	return r.Size - chunks*sealOverhead
}

// describeFile renders a file message for the terminal.
func describeFile(r fileRef, typ pb.ContentType) string {
	kind := strings.ToLower(strings.TrimPrefix(typ.String(), "CONTENT_"))
	if _, known := pb.ContentType_name[int32(typ)]; !known || typ == pb.ContentType_CONTENT_TEXT {
		kind = "file"
	}
	return fmt.Sprintf("[%s %s, %s]", kind, preview(safeName(r.Name)), size(r.plainSize()))
}

// safeName returns a file name fit for a directory entry: no path, no
// control characters, not hidden.
func safeName(name string) string {
	name = strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r < 0x20 || r == 0x7f {
			return '_'
		}
		return r
	}, filepath.Base(name))
	name = strings.TrimLeft(name, ".")
	if name == "" {
		name = "file"
	}
	return name
}

// contentTypeOf picks the message's content type for a file of this MIME
// type and ciphertext size: image, video or voice when the type says so
// and the size fits the type's limit, else document.
func contentTypeOf(mimeType string, size int64) pb.ContentType {
	t := pb.ContentType_CONTENT_DOCUMENT
	switch {
	case strings.HasPrefix(mimeType, "image/"):
		t = pb.ContentType_CONTENT_IMAGE
	case strings.HasPrefix(mimeType, "video/"):
		t = pb.ContentType_CONTENT_VIDEO
	case strings.HasPrefix(mimeType, "audio/"):
		t = pb.ContentType_CONTENT_VOICE
	}
	if size > protocol.MaxMediaSize(t) {
		t = pb.ContentType_CONTENT_DOCUMENT
	}
	return t
}

// mimeOf guesses a file's media type from its name, else its first bytes.
func mimeOf(name string, f io.ReaderAt) string {
	if t := mime.TypeByExtension(filepath.Ext(name)); t != "" {
		return t
	}
	head := make([]byte, 512)
	n, _ := f.ReadAt(head, 0)
	return http.DetectContentType(head[:n])
}

// rememberFile keeps the file reference of inbox entry seq in the profile
// for save-file, forgetting the oldest beyond maxKeptFiles.
func (k *conn) rememberFile(seq uint64, body []byte) {
	var seqs []uint64
	for key := range k.store.Attrs() {
		if s, ok := strings.CutPrefix(key, attrFile); ok {
			if n, err := strconv.ParseUint(s, 10, 64); err == nil {
				seqs = append(seqs, n)
			}
		}
	}
	slices.Sort(seqs)
	for len(seqs) >= maxKeptFiles {
		_ = k.store.SetAttr(attrFile+strconv.FormatUint(seqs[0], 10), "")
		seqs = seqs[1:]
	}
	if err := k.store.SetAttr(attrFile+strconv.FormatUint(seq, 10), string(body)); err != nil {
		k.con.statusf("could not keep the file of message %d: %v", seq, err)
	}
}

// media returns the command's media transfers, over its connection.
func (k *conn) media() (*client.Media, error) {
	httpc, err := client.NewMediaHTTPClient(k.cfg)
	if err != nil {
		return nil, err
	}
	return &client.Media{Requester: k.c, HTTP: httpc}, nil
}

// cmdSendFile encrypts a file, uploads it and sends its reference.
func cmdSendFile(ctx context.Context, args []string, e env) error {
	var o options
	fs := o.flags("send-file", e)
	to := fs.String("to", "", "")
	group := fs.String("group", "", "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case (*to == "") == (*group == ""):
		return usagef("send-file needs --to USER|+NUMBER or --group GROUP")
	case len(pos) != 1:
		return usagef("send-file needs exactly one file: parley send-file --to +NUMBER PATH")
	}
	f, err := openOutFile(pos[0])
	if err != nil {
		return usagef("send-file: %v", err)
	}
	defer f.Close()

	con := newConsole(e, o.plain)
	k, err := connect(ctx, &o, e, con, connectOptions{})
	if err != nil {
		return err
	}
	defer k.close()
	t, err := k.target(*to, *group)
	if err != nil {
		return err
	}
	body, err := k.upload(k.calls, f)
	if err != nil {
		return err
	}
	cctx, cancel := k.call()
	defer cancel()
	sent, err := t.send(cctx, k.c, body, f.typ)
	if err != nil {
		return k.sendFailed(sent, err)
	}
	con.printf("%s %s (%s) to %s at %s (id %d)", con.mark(stateSent), f.name, size(f.size), t.name, con.when(sent.Time), sent.ID)
	return nil
}

// outFile is a file about to be sent: open, checked, its name, media
// type and the message's content type chosen.
type outFile struct {
	*os.File
	name string // without directories
	mime string
	size int64 // of the file
	typ  pb.ContentType
}

// openOutFile opens path for send-file and /send-file. Its errors are
// the user's to fix.
func openOutFile(path string) (*outFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	switch {
	case err != nil:
	case !st.Mode().IsRegular():
		err = fmt.Errorf("%s is not a regular file", path)
	case sealedSize(st.Size()) > protocol.MaxMediaDocument:
		err = fmt.Errorf("%s is larger than %s", path, size(protocol.MaxMediaDocument-sealOverhead*(protocol.MaxMediaDocument/sealChunk)))
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	o := &outFile{File: f, name: safeName(st.Name()), size: st.Size()}
	o.mime = mimeOf(o.name, f)
	o.typ = contentTypeOf(o.mime, sealedSize(o.size))
	return o, nil
}

// upload encrypts f with a fresh key into a temporary file, uploads the
// ciphertext and returns the body of the message that carries it.
func (k *conn) upload(ctx context.Context, f *outFile) ([]byte, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp("", "parley-upload-*")
	if err != nil {
		return nil, fmt.Errorf("no room to encrypt %s: %w", f.name, pathCause(err))
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if err := seal(io.MultiWriter(tmp, h), f, f.size, key); err != nil {
		return nil, fmt.Errorf("encrypting %s: %w", f.name, pathCause(err))
	}
	sum := [32]byte(h.Sum(nil))
	m, err := k.media()
	if err != nil {
		return nil, err
	}
	defer m.HTTP.CloseIdleConnections()
	sealed := sealedSize(f.size)
	mref, err := m.UploadMedia(ctx, f.typ, tmp, sealed, sum)
	if err != nil {
		return nil, fmt.Errorf("uploading %s: %w", f.name, k.reason(err))
	}
	return json.Marshal(fileRef{
		Version: fileRefVersion, ID: mref.ID.String(), Key: base64.RawURLEncoding.EncodeToString(key),
		Size: sealed, SHA256: hex.EncodeToString(sum[:]), Name: f.name, MIME: f.mime,
	})
}

// cmdSaveFile downloads, checks and decrypts the file of a message.
func cmdSaveFile(ctx context.Context, args []string, e env) error {
	var o options
	fs := o.flags("save-file", e)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("save-file needs the message number and where to save: parley save-file SEQ PATH")
	}
	seq, err := strconv.ParseUint(pos[0], 10, 64)
	if err != nil || seq == 0 {
		return usagef("save-file: %q is not a message number (listen and chat show it)", pos[0])
	}
	con := newConsole(e, o.plain)
	k, err := connect(ctx, &o, e, con, connectOptions{})
	if err != nil {
		return err
	}
	defer k.close()
	dst, err := k.saveFile(k.ctx, seq, pos[1])
	if err != nil {
		return err
	}
	con.printf("saved %s", dst)
	return nil
}

// saveFile saves the file of inbox entry seq at path (a directory takes
// the file's own name) and returns where it went. If ctx ends first,
// nothing is left behind.
func (k *conn) saveFile(ctx context.Context, seq uint64, path string) (dst string, err error) {
	defer func() {
		if err != nil {
			err = hideTemp(path, err)
		}
	}()
	body := k.store.Attr(attrFile + strconv.FormatUint(seq, 10))
	ref, ok := parseFileRef([]byte(body))
	if !ok {
		return "", fmt.Errorf("no file in message %d (files are kept once listen or chat has shown them)", seq)
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, safeName(ref.Name))
	}
	if _, err := os.Lstat(path); err == nil {
		return "", fmt.Errorf("%s exists; choose another name", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	m, err := k.media()
	if err != nil {
		return "", err
	}
	defer m.HTTP.CloseIdleConnections()
	dir := filepath.Dir(path)
	enc, err := os.CreateTemp(dir, tempPrefix+"download-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(enc.Name())
	defer enc.Close()
	u, err := m.DownloadMedia(ctx, ref.mediaID(), enc)
	if err != nil {
		return "", fmt.Errorf("downloading %s: %w", ref.Name, k.reason(err))
	}
	// The server vouches for the bytes it stored; the sender's reference
	// for the bytes it sent. Both must agree.
	if u.Size != ref.Size || u.SHA256 != ref.sum() {
		return "", fmt.Errorf("the downloaded file is not the one the sender described: %w", client.ErrMediaCorrupt)
	}
	if _, err := enc.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	plain, err := os.CreateTemp(dir, tempPrefix+"file-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(plain.Name())
	defer plain.Close()
	if err := open(plain, enc, ref.Size, ref.key()); err != nil {
		return "", err
	}
	if err := plain.Sync(); err != nil {
		return "", err
	}
	if err := plain.Close(); err != nil {
		return "", err
	}
	if err := os.Link(plain.Name(), path); err != nil { // never replaces an existing file
		if err := renameNoReplace(plain.Name(), path); err != nil {
			return "", err
		}
	}
	return path, nil
}

// tempPrefix starts the names of the temporary files saveFile writes
// beside the destination.
const tempPrefix = ".parley-"

// hideTemp turns an error about a temporary file of saveFile, which the
// user never named, into one about path, the file they asked for.
func hideTemp(path string, err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	if errors.As(err, &le) || errors.As(err, &pe) && strings.HasPrefix(filepath.Base(pe.Path), tempPrefix) {
		return fmt.Errorf("could not save %s: %w", path, pathCause(err))
	}
	return err
}

// pathCause returns the cause of a file system error without the file
// names it carries ("no space left on device").
func pathCause(err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &le):
		return le.Err
	case errors.As(err, &pe):
		return pe.Err
	}
	return err
}

// renameNoReplace moves from to to unless to exists.
func renameNoReplace(from, to string) error {
	if _, err := os.Lstat(to); err == nil {
		return fmt.Errorf("%s exists; choose another name", to)
	}
	return os.Rename(from, to)
}
