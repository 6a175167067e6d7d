package tls13

import (
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"slices"
)

// Record layer constants (RFC 8446 §5).
const (
	recordHeaderLen = 5
	maxPlaintext    = 1 << 14     // TLSInnerPlaintext content, without the type byte
	maxCiphertext   = 1<<14 + 256 // TLSCiphertext.length
	tagLen          = 16          // every TLS 1.3 AEAD has a 16-byte tag
	recordOverhead  = 1 + tagLen  // inner content type + tag, per record
	sealedPerRecord = recordHeaderLen + recordOverhead

	typeAlert           = 21
	typeHandshake       = 22
	typeApplicationData = 23

	handshakeKeyUpdate = 24
	keyUpdateLen       = 4 + 1 // handshake header + request_update

	// maxUselessRecords bounds consecutive records that carry no application
	// data (empty records, KeyUpdate, user_canceled), as crypto/tls does.
	maxUselessRecords = 16

	// defaultRekeyAfter is the number of records sealed under one key
	// before Seal sends a KeyUpdate: below the 2^24.5 full-size records
	// RFC 8446 §5.5 allows for AES-GCM.
	defaultRekeyAfter = 1 << 24
)

// alert is a TLS alert description (RFC 8446 §6).
type alert uint8

const (
	alertCloseNotify       alert = 0
	alertUnexpectedMessage alert = 10
	alertBadRecordMAC      alert = 20
	alertRecordOverflow    alert = 22
	alertHandshakeFailure  alert = 40
	alertIllegalParameter  alert = 47
	alertDecodeError       alert = 50
	alertProtocolVersion   alert = 70
	alertInternalError     alert = 80
	alertUserCanceled      alert = 90
)

var alertNames = map[alert]string{
	alertCloseNotify:       "close_notify",
	alertUnexpectedMessage: "unexpected_message",
	alertBadRecordMAC:      "bad_record_mac",
	alertRecordOverflow:    "record_overflow",
	alertIllegalParameter:  "illegal_parameter",
	alertDecodeError:       "decode_error",
	alertInternalError:     "internal_error",
	alertUserCanceled:      "user_canceled",
}

func (a alert) String() string {
	if s, ok := alertNames[a]; ok {
		return s
	}
	return fmt.Sprintf("alert(%d)", uint8(a))
}

// recordError is a record-layer failure: the alert we send and why.
type recordError struct {
	alert alert
	msg   string
}

func (e *recordError) Error() string { return "tls13: " + e.msg + " (" + e.alert.String() + ")" }
func (e *recordError) Unwrap() error { return ErrRecord }

func recordErr(a alert, format string, args ...any) error {
	return &recordError{alert: a, msg: fmt.Sprintf(format, args...)}
}

// peerAlertError reports a fatal alert the peer sent us.
type peerAlertError alert

func (e peerAlertError) Error() string { return "tls13: peer sent alert " + alert(e).String() }
func (e peerAlertError) Unwrap() error { return ErrRecord }

// halfConn is the state of one direction of the record layer. The AEAD is
// a cache: nil while idle, rebuilt from key on the next record.
type halfConn struct {
	aead   cipher.AEAD
	seq    uint64
	secret [maxSecretLen]byte // application_traffic_secret_N; suite's hash length used
	key    [32]byte           // suite's key length used
	iv     [ivLen]byte
}

// setSecret installs a traffic secret: derives key and IV, resets the
// sequence number and drops the old AEAD.
func (hc *halfConn) setSecret(s *suite, secret []byte) {
	key, iv := s.trafficKeys(secret)
	hc.wipe()
	copy(hc.secret[:], secret)
	copy(hc.key[:], key)
	copy(hc.iv[:], iv)
	clear(key)
}

// update moves to the next traffic secret (KeyUpdate, RFC 8446 §4.6.3).
func (hc *halfConn) update(s *suite) {
	next := s.nextTrafficSecret(hc.secret[:s.hashLen])
	hc.setSecret(s, next)
	clear(next)
}

// cipher returns the AEAD, building it from the stored key if Idle dropped it.
func (hc *halfConn) cipher(s *suite) cipher.AEAD {
	if hc.aead == nil {
		aead, err := s.aead(hc.key[:s.keyLen])
		if err != nil {
			// Only a wrong key length fails, and keyLen comes from the table.
			panic("tls13: " + err.Error())
		}
		hc.aead = aead
	}
	return hc.aead
}

// nonce writes iv XOR seq (RFC 8446 §5.3) into buf.
func (hc *halfConn) nonce(buf *[ivLen]byte) []byte {
	*buf = hc.iv
	x := binary.BigEndian.Uint64(buf[4:]) ^ hc.seq
	binary.BigEndian.PutUint64(buf[4:], x)
	return buf[:]
}

// wipe zeroes the keys and drops the AEAD.
func (hc *halfConn) wipe() {
	*hc = halfConn{}
}

// SealedSize returns the number of bytes Seal appends for n bytes of
// plaintext: one 22-byte overhead per record of up to 16 KiB. Seal adds 27
// more bytes, once, in the rare call that rotates its key (once every 2^24
// records). SealedSize(0) is 0.
func SealedSize(n int) int {
	if n <= 0 {
		return 0
	}
	records := (n + maxPlaintext - 1) / maxPlaintext
	return n + records*sealedPerRecord
}

// sealRecord appends one protected record carrying payload (at most
// maxPlaintext bytes) with inner content type typ, sealed under out. Once
// rekeyAfter records have used the sending key, a KeyUpdate goes first (a
// KeyUpdate record never triggers another).
func (tc *Conn) sealRecord(dst []byte, typ uint8, payload []byte) []byte {
	s := &suites[tc.suite]
	if tc.out.seq >= tc.rekeyAfter() && typ != typeHandshake {
		dst = tc.sendKeyUpdate(dst, false)
	}
	hc := &tc.out
	aead := hc.cipher(s)
	n := len(payload) + recordOverhead
	dst = slices.Grow(dst, recordHeaderLen+n)
	start := len(dst)
	dst = append(dst, typeApplicationData, 3, 3, byte(n>>8), byte(n))
	dst = append(dst, payload...)
	dst = append(dst, typ)
	inner := dst[start+recordHeaderLen:]
	// Capacity was reserved above, so Seal writes in place into dst's array.
	aead.Seal(inner[:0], hc.nonce(&tc.nonceBuf), inner, dst[start:start+recordHeaderLen])
	hc.seq++
	return dst[:start+recordHeaderLen+n]
}

// sendKeyUpdate appends a KeyUpdate record under the current sending key,
// then switches to the next one.
func (tc *Conn) sendKeyUpdate(dst []byte, requestUpdate bool) []byte {
	msg := [keyUpdateLen]byte{handshakeKeyUpdate, 0, 0, 1, 0}
	if requestUpdate {
		msg[4] = 1
	}
	dst = tc.sealRecord(dst, typeHandshake, msg[:])
	tc.out.update(&suites[tc.suite])
	return dst
}

// openRecord authenticates and decrypts one complete record (header
// included), appending application data to dst. Non-data records are
// handled here: alerts end the connection, KeyUpdate rotates keys.
func (tc *Conn) openRecord(dst, record []byte) ([]byte, error) {
	if record[0] != typeApplicationData {
		return dst, recordErr(alertUnexpectedMessage, "unexpected outer record type %d after the handshake", record[0])
	}
	ciphertext := record[recordHeaderLen:]
	if len(ciphertext) > maxCiphertext {
		return dst, recordErr(alertRecordOverflow, "record of %d bytes exceeds 2^14+256", len(ciphertext))
	}
	if len(ciphertext) < recordOverhead {
		return dst, recordErr(alertBadRecordMAC, "record of %d bytes is too short", len(ciphertext))
	}
	s := &suites[tc.suite]
	hc := &tc.in
	if hc.seq == math.MaxUint64 {
		return dst, recordErr(alertInternalError, "sequence number exhausted")
	}
	start := len(dst)
	out, err := hc.cipher(s).Open(dst, hc.nonce(&tc.nonceBuf), ciphertext, record[:recordHeaderLen])
	if err != nil {
		return dst, recordErr(alertBadRecordMAC, "record authentication failed")
	}
	hc.seq++

	// TLSInnerPlaintext: content || type || zeros (RFC 8446 §5.2).
	i := len(out) - 1
	for i >= start && out[i] == 0 {
		i--
	}
	if i < start {
		return out[:start], recordErr(alertUnexpectedMessage, "record has no content type")
	}
	typ, content := out[i], out[start:i]
	if len(content) > maxPlaintext {
		return out[:start], recordErr(alertRecordOverflow, "record plaintext of %d bytes exceeds 2^14", len(content))
	}

	switch typ {
	case typeApplicationData:
		if len(content) == 0 {
			return out[:start], tc.uselessRecord()
		}
		tc.useless = 0
		return out[:i], nil
	case typeAlert:
		return out[:start], tc.handleAlert(content)
	case typeHandshake:
		return out[:start], tc.handleHandshake(content)
	default:
		return out[:start], recordErr(alertUnexpectedMessage, "unexpected inner content type %d", typ)
	}
}

func (tc *Conn) uselessRecord() error {
	tc.useless++
	if tc.useless > maxUselessRecords {
		return recordErr(alertUnexpectedMessage, "too many records without application data")
	}
	return nil
}

func (tc *Conn) handleAlert(content []byte) error {
	if len(content) != 2 {
		return recordErr(alertUnexpectedMessage, "alert of %d bytes", len(content))
	}
	switch a := alert(content[1]); a {
	case alertCloseNotify:
		return io.EOF
	case alertUserCanceled:
		// RFC 8446 §6.1: a warning followed by close_notify; ignored like
		// crypto/tls, BoringSSL and NSS do.
		return tc.uselessRecord()
	default:
		return peerAlertError(a)
	}
}

// handleHandshake accepts the only handshake message a client may send
// after its Finished when the server requests no post-handshake auth:
// KeyUpdate, alone in its record (RFC 8446 §5.1 requires KeyUpdate to end
// a record; this package also refuses to reassemble one split across
// records, which no known stack does).
func (tc *Conn) handleHandshake(content []byte) error {
	if len(content) == 0 {
		return recordErr(alertUnexpectedMessage, "empty handshake record")
	}
	if content[0] != handshakeKeyUpdate {
		return recordErr(alertUnexpectedMessage, "unexpected post-handshake message type %d", content[0])
	}
	if len(content) != keyUpdateLen || content[1] != 0 || content[2] != 0 || content[3] != 1 {
		return recordErr(alertDecodeError, "malformed KeyUpdate")
	}
	if err := tc.uselessRecord(); err != nil {
		return err
	}
	switch content[4] {
	case 0: // update_not_requested
	case 1: // update_requested
		tc.keyUpdateDue = true
	default:
		return recordErr(alertIllegalParameter, "KeyUpdate request_update %d", content[4])
	}
	tc.in.update(&suites[tc.suite])
	return nil
}

// AlertRecord appends a plaintext fatal alert record with the given
// description (RFC 8446 §6), for refusing a peer before any keys exist,
// e.g. after ErrNotTLS: AlertRecord(nil, 10) is unexpected_message. It may
// be called from any goroutine.
func AlertRecord(dst []byte, desc uint8) []byte {
	return append(dst, typeAlert, 3, 3, 0, 2, 2, desc)
}
