package vault

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/airlock-dev/airlock/internal/atomicfile"
)

// caFile is ca.json: the certificate in the clear, the key sealed.
type caFile struct {
	Version int    `json:"v"`
	Cert    []byte `json:"cert"` // DER
	Nonce   []byte `json:"nonce"`
	Sealed  []byte `json:"sealed_key"` // PKCS#8, sealed
}

func (v *Vault) caPath() string { return filepath.Join(v.dir, "ca.json") }
func (v *Vault) caAD() []byte   { return []byte("airlock-vault-ca-v1\x00" + v.pod) }

// PodCA returns the pod's interception CA, creating it on first use: an
// ECDSA P-256 certificate that may sign only end-entity certificates. Its
// key is sealed like a secret.
func (v *Vault) PodCA() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if v.dataKey == nil {
		return nil, nil, errors.New("vault is locked: call Unlock first")
	}
	b, err := readFileNoFollow(v.caPath())
	if errors.Is(err, os.ErrNotExist) {
		return v.newCA()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading the CA of pod %s: %w", v.pod, err)
	}
	var cf caFile
	if err := json.Unmarshal(b, &cf); err != nil || cf.Version != 1 {
		return nil, nil, fmt.Errorf("the CA of pod %s is damaged; remove %s to make a new one", v.pod, v.caPath())
	}
	der, err := openBytes(v.dataKey, cf.Nonce, cf.Sealed, v.caAD())
	if err != nil {
		return nil, nil, fmt.Errorf("the CA key of pod %s does not open (altered or from another pod); remove %s to make a new one", v.pod, v.caPath())
	}
	defer clear(der)
	key, err := x509.ParsePKCS8PrivateKey(der)
	cert, cerr := x509.ParseCertificate(cf.Cert)
	ek, ok := key.(*ecdsa.PrivateKey)
	if err != nil || cerr != nil || !ok || time.Now().After(cert.NotAfter) {
		return nil, nil, fmt.Errorf("the CA of pod %s is damaged or expired; remove %s to make a new one", v.pod, v.caPath())
	}
	return cert, ek, nil
}

func (v *Vault) newCA() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Airlock pod " + v.pod + " CA", Organization: []string{"Airlock"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(5, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the CA of pod %s: %w", v.pod, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	defer clear(kder)
	cf := caFile{Version: 1, Cert: der}
	if cf.Nonce, cf.Sealed, err = sealBytes(v.dataKey, kder, v.caAD()); err != nil {
		return nil, nil, err
	}
	b, _ := json.MarshalIndent(cf, "", "  ")
	if err := os.MkdirAll(v.dir, 0o700); err != nil {
		return nil, nil, err
	}
	if err := atomicfile.WriteFile(v.caPath(), b); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}
