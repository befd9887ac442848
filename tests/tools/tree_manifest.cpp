// tree-manifest DIR: one line per entry of a directory tree, sorted by path,
// with everything a mount must preserve: type, mode, owner, size, mtime (ns),
// symlink target, device numbers, link count (non-directories), xattrs and a
// SHA-256 of regular file contents. Two trees are equal when their manifests
// are byte-identical, so a minimal guest (busybox + this) can check a mount
// against a manifest made of the source tree on the host. Paths and values
// are escaped, so any byte in a name is fine. The top directory's mtime is
// left out (images may not keep it).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <openssl/evp.h>

namespace {

std::string escape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x21 || c > 0x7e || c == '\\' || c == '=' || c == ';') {
      char buf[5];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out;
}

std::string hex(const unsigned char* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) out += d[p[i] >> 4], out += d[p[i] & 15];
  return out;
}

bool sha256_file(const std::string& path, std::string* out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<unsigned char> buf(1 << 20);
  bool ok = true;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      ok = false;
      break;
    }
    EVP_DigestUpdate(ctx, buf.data(), size_t(n));
  }
  unsigned char md[32];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  ::close(fd);
  *out = ok ? hex(md, len) : std::string("READ-ERROR:") + std::strerror(errno);
  return ok;
}

std::string xattrs(const std::string& path) {
  ssize_t n = ::llistxattr(path.c_str(), nullptr, 0);
  if (n <= 0) return "";
  std::vector<char> names(size_t(n) + 1);
  n = ::llistxattr(path.c_str(), names.data(), names.size());
  if (n <= 0) return "";
  std::vector<std::string> list;
  for (ssize_t i = 0; i < n;) {
    std::string name(names.data() + i);
    i += ssize_t(name.size()) + 1;
    // SELinux labels are added by the host, not the image.
    if (name == "security.selinux") continue;
    std::vector<unsigned char> v(65536);
    const ssize_t vn = ::lgetxattr(path.c_str(), name.c_str(), v.data(), v.size());
    list.push_back(escape(name) + "=" + (vn < 0 ? std::string("ERR") : hex(v.data(), size_t(vn))));
  }
  std::sort(list.begin(), list.end());
  std::string out;
  for (auto& x : list) out += (out.empty() ? "" : ";") + x;
  return out;
}

std::string fmt9(long ns) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%09ld", ns);
  return buf;
}

int errors = 0;

void walk(const std::string& root, const std::string& rel, std::vector<std::string>& lines) {
  const std::string path = rel.empty() ? root : root + "/" + rel;
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    lines.push_back(escape(rel.empty() ? "." : rel) + " LSTAT-ERROR");
    errors++;
    return;
  }
  char type = '?';
  if (S_ISREG(st.st_mode)) type = 'f';
  else if (S_ISDIR(st.st_mode)) type = 'd';
  else if (S_ISLNK(st.st_mode)) type = 'l';
  else if (S_ISCHR(st.st_mode)) type = 'c';
  else if (S_ISBLK(st.st_mode)) type = 'b';
  else if (S_ISFIFO(st.st_mode)) type = 'p';
  else if (S_ISSOCK(st.st_mode)) type = 's';
  char head[256];
  std::snprintf(head, sizeof(head), " %c mode=%04o uid=%u gid=%u", type, unsigned(st.st_mode & 07777),
                unsigned(st.st_uid), unsigned(st.st_gid));
  std::string line = escape(rel.empty() ? "." : rel) + head;
  if (!rel.empty())
    line += " mtime=" + std::to_string(st.st_mtim.tv_sec) + "." + fmt9(st.st_mtim.tv_nsec);
  if (type != 'd') line += " nlink=" + std::to_string(st.st_nlink);
  if (type == 'f' || type == 'l') line += " size=" + std::to_string(st.st_size);
  if (type == 'c' || type == 'b')
    line += " rdev=" + std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
  if (type == 'l') {
    std::vector<char> t(size_t(st.st_size) + 2);
    const ssize_t n = ::readlink(path.c_str(), t.data(), t.size());
    line += " target=" + (n < 0 ? std::string("ERR") : escape(std::string(t.data(), size_t(n))));
  }
  if (std::string x = xattrs(path); !x.empty()) line += " xattrs=" + x;
  if (type == 'f') {
    std::string sum;
    if (!sha256_file(path, &sum)) errors++;
    line += " sha256=" + sum;
  }
  lines.push_back(line);
  if (type != 'd') return;
  DIR* d = ::opendir(path.c_str());
  if (!d) {
    lines.push_back(escape(rel.empty() ? "." : rel) + " OPENDIR-ERROR");
    errors++;
    return;
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  for (const auto& n : names) walk(root, rel.empty() ? n : rel + "/" + n, lines);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: tree-manifest DIR\n");
    return 2;
  }
  std::vector<std::string> lines;
  walk(argv[1], "", lines);
  std::sort(lines.begin(), lines.end());
  for (const auto& l : lines) std::printf("%s\n", l.c_str());
  if (errors) std::fprintf(stderr, "tree-manifest: %d entries could not be read\n", errors);
  return errors ? 1 : 0;
}
