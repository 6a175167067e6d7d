package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config selects an S3-compatible object store (AWS S3, MinIO, Ceph RGW,
// Garage, R2 …) for blobs instead of the data directory.
type S3Config struct {
	// Endpoint is the host[:port] of the S3 API, without a scheme, for
	// example "s3.eu-west-1.amazonaws.com" or "127.0.0.1:9000". Required.
	Endpoint string
	// Bucket holds the blobs; it must exist. Required.
	Bucket string
	// Prefix is prepended to every object name; default "" (the blob's
	// SHA-256 in hex is the object name).
	Prefix string
	// AccessKey and SecretKey are static credentials; both empty means
	// anonymous access.
	AccessKey, SecretKey string
	// Region is the bucket's region; empty lets the client discover it.
	Region string
	// Insecure speaks plain HTTP to the endpoint (a store on loopback or
	// a private network); the default is HTTPS.
	Insecure bool
	// VirtualHost addresses the bucket as <bucket>.<endpoint>; the default
	// is path style (<endpoint>/<bucket>), which every S3-compatible
	// server supports.
	VirtualHost bool
	// Transport carries the requests; nil means minio-go's default (the
	// system's root CAs). Tests set it to trust a test certificate.
	Transport http.RoundTripper
	// PartSize is the multipart upload part size in bytes; default 16 MiB.
	// Put holds at most PartSize × 2 bytes of a blob in memory.
	PartSize uint64
}

// S3Store is a Store in an S3-compatible bucket, through minio-go. Blobs
// are objects named Prefix + hex SHA-256.
type S3Store struct {
	cfg S3Config
	c   *minio.Client
}

var _ Store = (*S3Store)(nil)

// NewS3Store returns a store for cfg. It does no network I/O.
func NewS3Store(cfg S3Config) (*S3Store, error) {
	var errs []error
	if cfg.Endpoint == "" {
		errs = append(errs, errors.New("no S3 endpoint"))
	}
	if strings.Contains(cfg.Endpoint, "://") {
		errs = append(errs, fmt.Errorf("S3 endpoint %q: give host:port without a scheme (see Insecure)", cfg.Endpoint))
	}
	if cfg.Bucket == "" {
		errs = append(errs, errors.New("no S3 bucket"))
	}
	if (cfg.AccessKey == "") != (cfg.SecretKey == "") {
		errs = append(errs, errors.New("S3 access key and secret key go together"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("media: s3: %w", err)
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = 16 << 20
	}
	lookup := minio.BucketLookupPath
	if cfg.VirtualHost {
		lookup = minio.BucketLookupDNS
	}
	var creds *credentials.Credentials
	if cfg.AccessKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	} else {
		creds = credentials.New(&credentials.Static{Value: credentials.Value{SignerType: credentials.SignatureAnonymous}})
	}
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:        creds,
		Secure:       !cfg.Insecure,
		Region:       cfg.Region,
		BucketLookup: lookup,
		Transport:    cfg.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("media: s3: %w", err)
	}
	return &S3Store{cfg: cfg, c: c}, nil
}

// Check verifies that the bucket exists and is reachable.
func (s *S3Store) Check(ctx context.Context) error {
	ok, err := s.c.BucketExists(ctx, s.cfg.Bucket)
	if err != nil {
		return fmt.Errorf("media: s3: bucket %s: %w", s.cfg.Bucket, err)
	}
	if !ok {
		return fmt.Errorf("media: s3: bucket %s does not exist", s.cfg.Bucket)
	}
	return nil
}

func (s *S3Store) key(h Hash) string { return s.cfg.Prefix + h.String() }

// Put implements Store: it uploads the file, in parts for large blobs,
// and leaves it for the caller to remove.
func (s *S3Store) Put(ctx context.Context, h Hash, path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("media: s3: %w", err)
	}
	defer f.Close()
	_, err = s.c.PutObject(ctx, s.cfg.Bucket, s.key(h), f, size, minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		PartSize:    s.cfg.PartSize,
		NumThreads:  2,
	})
	if err != nil {
		return fmt.Errorf("media: s3: put %s: %w", h, err)
	}
	return nil
}

// Open implements Store with a ranged GET.
func (s *S3Store) Open(ctx context.Context, h Hash, off, n int64) (io.ReadCloser, error) {
	var opts minio.GetObjectOptions
	if n <= 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	if err := opts.SetRange(off, off+n-1); err != nil {
		return nil, fmt.Errorf("media: s3: %w", err)
	}
	obj, err := s.c.GetObject(ctx, s.cfg.Bucket, s.key(h), opts)
	if err != nil {
		return nil, s.mapErr(h, err)
	}
	// Stat sends the GET, so a missing object shows here and not in the
	// middle of a response.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		return nil, s.mapErr(h, err)
	}
	return obj, nil
}

func (s *S3Store) mapErr(h Hash, err error) error {
	if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
		return ErrBlobNotFound
	}
	return fmt.Errorf("media: s3: get %s: %w", h, err)
}

// Delete implements Store.
func (s *S3Store) Delete(ctx context.Context, h Hash) error {
	if err := s.c.RemoveObject(ctx, s.cfg.Bucket, s.key(h), minio.RemoveObjectOptions{}); err != nil {
		if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
			return nil
		}
		return fmt.Errorf("media: s3: delete %s: %w", h, err)
	}
	return nil
}

// List implements Store. Objects under Prefix whose names are not hashes
// are ignored.
func (s *S3Store) List(ctx context.Context, fn func(h Hash) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the lister if fn fails
	for obj := range s.c.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.cfg.Prefix, Recursive: true}) {
		if obj.Err != nil {
			return fmt.Errorf("media: s3: list: %w", obj.Err)
		}
		h, err := ParseHash(strings.TrimPrefix(obj.Key, s.cfg.Prefix))
		if err != nil {
			continue
		}
		if err := fn(h); err != nil {
			return err
		}
	}
	return nil
}
