// containerd's filter language as its metadata layer and `ctr snapshots ls` send it.
#include "snapshotter/filter.h"

#include <gtest/gtest.h>

#include <map>

using nydus::snapshotter::Filter;

namespace {

// An item with the fields of a snapshot Info.
Filter::Adaptor item(std::map<std::string, std::string> fields) {
  return [fields](const std::vector<std::string>& path) -> std::optional<std::string> {
    std::string k;
    for (size_t i = 0; i < path.size(); ++i) k += (i ? "." : "") + path[i];
    // labels.<key with dots>: the adaptor joins the rest of the path.
    auto it = fields.find(k);
    if (it == fields.end()) return std::nullopt;
    return it->second;
  };
}

bool matches(const std::string& f, const Filter::Adaptor& a) {
  auto parsed = Filter::parse(f);
  EXPECT_TRUE(parsed.has_value()) << f;
  return parsed && parsed->match(a);
}

}  // namespace

TEST(SnapshotFilter, MetadataTargetLookup) {
  // The exact string containerd's metadata/snapshot.go sends after AlreadyExists.
  const std::string target = "sha256:7ad00cd55506625f2afad262de6002c8cef20d214b353e51d1025e40e8646e18";
  const std::string f = "labels.\"containerd.io/snapshot.ref\"==" + target + ",parent==\"default/3/sha256:abc\"";
  EXPECT_TRUE(matches(f, item({{"labels.containerd.io/snapshot.ref", target}, {"parent", "default/3/sha256:abc"}})));
  EXPECT_FALSE(matches(f, item({{"labels.containerd.io/snapshot.ref", target}, {"parent", "other"}})));
  EXPECT_FALSE(matches(f, item({{"parent", "default/3/sha256:abc"}})));
}

TEST(SnapshotFilter, OperatorsAndPresence) {
  auto a = item({{"kind", "committed"}, {"name", "n1"}, {"labels.x", "1"}});
  EXPECT_TRUE(matches("kind==committed", a));
  EXPECT_FALSE(matches("kind!=committed", a));
  EXPECT_TRUE(matches("labels.x", a));
  EXPECT_FALSE(matches("labels.y", a));
  EXPECT_TRUE(matches("labels.y!=2", a));  // absent is "not equal"
  EXPECT_TRUE(matches("name~=^n[0-9]$", a));
  EXPECT_TRUE(matches("name~=/^n\\d$/", a));
  EXPECT_FALSE(matches("name~=^m", a));
  EXPECT_TRUE(matches("", a));
  EXPECT_TRUE(matches("  kind == committed , name==n1 ", a));
}

TEST(SnapshotFilter, AnyOfList) {
  auto a = item({{"kind", "active"}});
  auto f = Filter::parse_any({"kind==committed", "kind==active"});
  ASSERT_TRUE(f);
  EXPECT_TRUE(f->match(a));
  auto g = Filter::parse_any({"kind==committed", "kind==view"});
  ASSERT_TRUE(g);
  EXPECT_FALSE(g->match(a));
  auto none = Filter::parse_any({});
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->match(a));
}

TEST(SnapshotFilter, BadInputIsAnError) {
  for (const char* bad : {"kind==", "==x", "labels.\"open", "a,,b", "name~=(", "kind==a b"})
    EXPECT_FALSE(Filter::parse(bad).has_value()) << bad;
  EXPECT_FALSE(Filter::parse(std::string(100000, 'a')).has_value());
}
