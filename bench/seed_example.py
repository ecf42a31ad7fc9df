# The seed example (/work/shared/seed/000_a7b1a8319763efd7.txt, "리프레시 토큰"), made to
# work, as the baseline of the chained-refresh benchmark. Its flow and code shape are
# kept; only these changes, each needed for a refresh chain to work here:
# - PyJWT instead of python-jose, which is not installed (same encode/decode calls;
#   PyJWT's InvalidTokenError stands in for JWTError).
# - `sub` as a string: PyJWT (like RFC 7519) refuses a numeric `sub` on decode, so every
#   refresh failed with "유효하지 않은 토큰입니다".
# - a `jti` in each token: two tokens for the same user in the same second were
#   byte-identical, so the new refresh token was the one just blacklisted.
# - JSON bodies instead of query parameters on login and refresh (no password in URLs
#   and logs; the same requests as tokenstile's).
# - the remaining lifetime from an aware UTC time: `datetime.utcnow().timestamp()` reads
#   the naive UTC time as local time, so off UTC the blacklist TTL is wrong (or negative,
#   and SETEX fails).
# - Redis URL and secret from the environment (the benchmark uses db 14, never db 0).
# The check-then-blacklist refresh is kept as it is (EXISTS, decode, SETEX: not atomic,
# so two concurrent refreshes with one token both succeed): that IS the baseline. So is
# the synchronous Redis client in `def` routes (run in Starlette's thread pool). Logout
# is unchanged and not benchmarked.

import os
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import redis
from fastapi import FastAPI, HTTPException, status
from jwt import InvalidTokenError as JWTError
from pydantic import BaseModel

app = FastAPI()

# Redis 연결 (토큰 블랙리스트)
redis_client = redis.Redis.from_url(
    os.environ.get("SEED_REDIS_URL", "redis://127.0.0.1:6379/14"), decode_responses=True
)

# 설정
SECRET_KEY = os.environ.get("SEED_SECRET_KEY", "your-secret-key")
ALGORITHM = "HS256"
ACCESS_TOKEN_EXPIRE_MINUTES = 30
REFRESH_TOKEN_EXPIRE_DAYS = 7


class TokenPair(BaseModel):
    """토큰 쌍"""

    access_token: str
    refresh_token: str
    token_type: str = "bearer"


class LoginRequest(BaseModel):
    username: str
    password: str


class RefreshRequest(BaseModel):
    refresh_token: str


def create_access_token(data: dict) -> str:
    """액세스 토큰 생성 (짧은 만료 시간)"""
    to_encode = data.copy()
    expire = datetime.utcnow() + timedelta(minutes=ACCESS_TOKEN_EXPIRE_MINUTES)
    to_encode.update({"exp": expire, "type": "access", "jti": uuid.uuid4().hex})
    return jwt.encode(to_encode, SECRET_KEY, algorithm=ALGORITHM)


def create_refresh_token(data: dict) -> str:
    """리프레시 토큰 생성 (긴 만료 시간)"""
    to_encode = data.copy()
    expire = datetime.utcnow() + timedelta(days=REFRESH_TOKEN_EXPIRE_DAYS)
    to_encode.update({"exp": expire, "type": "refresh", "jti": uuid.uuid4().hex})
    return jwt.encode(to_encode, SECRET_KEY, algorithm=ALGORITHM)


def is_token_blacklisted(token: str) -> bool:
    """토큰 블랙리스트 확인"""
    return redis_client.exists(f"blacklist:{token}") > 0


def blacklist_token(token: str, expire_seconds: int):
    """토큰을 블랙리스트에 추가"""
    redis_client.setex(f"blacklist:{token}", expire_seconds, "1")


@app.post("/auth/login", response_model=TokenPair)
def login(body: LoginRequest):
    """로그인 - Access & Refresh Token 발급"""
    # 사용자 인증 (생략)
    user_id = 1

    # 토큰 쌍 생성
    access_token = create_access_token({"sub": str(user_id)})
    refresh_token = create_refresh_token({"sub": str(user_id)})

    return TokenPair(access_token=access_token, refresh_token=refresh_token)


@app.post("/auth/refresh", response_model=TokenPair)
def refresh_tokens(body: RefreshRequest):
    """Refresh Token으로 새 토큰 발급"""
    refresh_token = body.refresh_token
    # 블랙리스트 확인
    if is_token_blacklisted(refresh_token):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED, detail="토큰이 무효화되었습니다"
        )

    try:
        # Refresh Token 검증
        payload = jwt.decode(refresh_token, SECRET_KEY, algorithms=[ALGORITHM])

        if payload.get("type") != "refresh":
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED, detail="Refresh Token이 아닙니다"
            )

        user_id = payload.get("sub")

        # 새 토큰 쌍 생성
        new_access_token = create_access_token({"sub": user_id})
        new_refresh_token = create_refresh_token({"sub": user_id})

        # 이전 Refresh Token 블랙리스트 추가
        remaining_time = payload.get("exp") - datetime.now(UTC).timestamp()
        blacklist_token(refresh_token, int(remaining_time))

        return TokenPair(access_token=new_access_token, refresh_token=new_refresh_token)

    except JWTError:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED, detail="유효하지 않은 토큰입니다"
        )


@app.post("/auth/logout")
def logout(access_token: str, refresh_token: str):
    """로그아웃 - 토큰 무효화"""
    # 두 토큰 모두 블랙리스트에 추가
    try:
        access_payload = jwt.decode(access_token, SECRET_KEY, algorithms=[ALGORITHM])
        refresh_payload = jwt.decode(refresh_token, SECRET_KEY, algorithms=[ALGORITHM])

        access_remaining = access_payload.get("exp") - datetime.utcnow().timestamp()
        refresh_remaining = refresh_payload.get("exp") - datetime.utcnow().timestamp()

        blacklist_token(access_token, int(access_remaining))
        blacklist_token(refresh_token, int(refresh_remaining))

        return {"message": "로그아웃 완료"}

    except JWTError:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED, detail="유효하지 않은 토큰입니다"
        )
