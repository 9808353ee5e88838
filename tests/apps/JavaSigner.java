// A Java application as Java teams write them: the JDK's SunPKCS11 provider over p11-kit-client.so,
// an EC key pair made on the token, SHA256withECDSA in a loop; on a failure it logs in again
// (a new Signature from the same provider) and goes on. One line per signature: "n OK" or
// "n FAILED <exception>: <message>". Environment: CKDEMO_P11_MODULE, CKDEMO_USER_PIN.
// Usage: java JavaSigner.java COUNT
import java.security.*;
import java.security.spec.ECGenParameterSpec;
import java.nio.file.*;

public class JavaSigner {
    public static void main(String[] args) throws Exception {
        int count = Integer.parseInt(args[0]);
        Path config = Files.createTempFile("sunpkcs11", ".cfg");
        Files.writeString(config, "name = ckdemo\nlibrary = " + System.getenv("CKDEMO_P11_MODULE")
                + "\nslotListIndex = 0\n");
        Provider provider = Security.getProvider("SunPKCS11").configure(config.toString());
        KeyStore store = KeyStore.getInstance("PKCS11", provider);
        store.load(null, System.getenv("CKDEMO_USER_PIN").toCharArray());
        KeyPairGenerator generator = KeyPairGenerator.getInstance("EC", provider);
        generator.initialize(new ECGenParameterSpec("secp256r1"));
        KeyPair pair = generator.generateKeyPair();
        int failures = 0;
        for (int n = 0; n < count; n++) {
            try {
                Signature signer = Signature.getInstance("SHA256withECDSA", provider);
                signer.initSign(pair.getPrivate());
                signer.update(("payload " + n).getBytes());
                byte[] signature = signer.sign();
                Signature verifier = Signature.getInstance("SHA256withECDSA");
                verifier.initVerify(pair.getPublic());
                verifier.update(("payload " + n).getBytes());
                System.out.println(n + (verifier.verify(signature) ? " OK" : " FAILED wrong signature"));
            } catch (Exception error) {
                failures++;
                System.out.println(n + " FAILED " + error.getClass().getSimpleName() + ": " + error.getMessage());
            }
        }
        Files.deleteIfExists(config);
        System.exit(failures == 0 ? 0 : 1);
    }
}
