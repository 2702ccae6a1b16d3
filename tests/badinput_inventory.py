"""Bad-input cases of the inventory capability (products, suppliers, reorder rules)."""

from hypothesis import strategies as st

from badinput import Case, grew, nasty_text, number_text, register

PRODUCT = (("inventory", "add-product", "P1", "--tenant", "acme", "--stock", "1"),)
skus = st.one_of(st.just("P1"), nasty_text)

register(Case("inventory add-product", st.tuples(nasty_text, nasty_text, number_text, number_text).map(
    lambda t: ["inventory", "add-product", t[0], "--tenant", "acme", "--name", t[1], "--stock", t[2],
               "--unit-cost", t[3]]), grew("erp_products"), owner="inventory"))
register(Case("inventory set-stock", st.tuples(skus, number_text).map(
    lambda t: ["inventory", "set-stock", t[0], t[1], "--tenant", "acme"]), setup=PRODUCT, owner="inventory"))
register(Case("inventory add-rule", st.tuples(skus, number_text, number_text, number_text).map(
    lambda t: ["inventory", "add-rule", t[0], "--tenant", "acme", "--min", t[1], "--reorder", t[2],
               "--max", t[3]]), setup=PRODUCT, owner="inventory"))
register(Case("inventory add-supplier", st.tuples(nasty_text, nasty_text).map(
    lambda t: ["inventory", "add-supplier", t[0], "--tenant", "acme", "--email", t[1]]), owner="inventory"))
register(Case("inventory orders", st.tuples(number_text, number_text, nasty_text).map(
    lambda t: ["inventory", "orders", "--limit", t[0], "--offset", t[1], "--tenant", t[2]]), owner="inventory"))
