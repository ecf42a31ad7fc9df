"""Error sentences in the languages the API speaks (SPEC §7); codes never change."""

from __future__ import annotations

KOREAN = {
    "invalid_request": "요청 형식이 올바르지 않습니다.",
    "invalid_credentials": "사용자 이름 또는 비밀번호가 올바르지 않습니다.",
    "invalid_token": "토큰이 유효하지 않습니다.",
    "token_expired": "토큰이 만료되었습니다.",
    "token_revoked": "토큰이 폐기되었습니다.",
    "token_reused": "이미 사용된 리프레시 토큰입니다. 보안을 위해 세션이 종료되었습니다.",
    "csrf_failed": "CSRF 검사에 실패했습니다.",
    "rate_limited": "시도 횟수가 너무 많습니다. 잠시 후 다시 시도하세요.",
    "registration_closed": "회원 가입이 닫혀 있습니다.",
    "username_taken": "이미 사용 중인 사용자 이름입니다.",
    "weak_password": "비밀번호가 정책을 충족하지 않습니다.",
    "store_unavailable": "세션 저장소를 사용할 수 없습니다. 잠시 후 다시 시도하세요.",
    "not_found": "찾을 수 없습니다.",
    "method_not_allowed": "허용되지 않는 메서드입니다.",
    "server_error": "요청을 처리할 수 없습니다.",
}


def prefers_korean(accept_language: str | None) -> bool:
    """Whether the highest-weighted language in ``Accept-Language`` is Korean."""
    if not accept_language:
        return False
    best, best_weight = "", -1.0
    for part in accept_language.split(",")[:20]:
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                continue
        if weight > best_weight and weight > 0:  # q=0 means "not acceptable"
            best, best_weight = tag.strip().lower(), weight
    return best == "ko" or best.startswith("ko-")


def localized(code: str, detail: str, accept_language: str | None) -> str:
    if prefers_korean(accept_language):
        return KOREAN.get(code, detail)
    return detail
