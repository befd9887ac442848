// Placeholder so the part links before its first real source lands.
namespace nydus::builder {}
