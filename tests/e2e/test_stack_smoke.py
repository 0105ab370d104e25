from tests.support.stack import LiveStation, wait_until


def test_stack_smoke(tmp_path):
    with LiveStation(tmp_path, http=True) as ls:
        core = ls.core
        core.couriers.add("c1", "SF", "Li", "1234")
        s = core.shelving.open_session("c1")
        r = core.shelving.scan(s["session_id"], "SF1234567890123", "13812341234", "S")
        assert ls.lit() == {r.slot: (r.colour,)}
        ls.put(r.slot)
        code = ls.wait_code_for("13812341234")
        import httpx
        res = httpx.post(ls.base_url + "/api/kiosk/code", json={"code": code},
                         headers={"Authorization": "Bearer " + ls.token("kiosk", "k1")})
        assert res.status_code == 200, res.text
        wait_until(lambda: r.slot in ls.lit())
