from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_api_key.permissions import HasAPIKey


class Ping(APIView):
    """The protected endpoint: HasAPIKey checks `Authorization: Api-Key <key>`."""

    permission_classes = [HasAPIKey]

    def get(self, request):
        return Response({"valid": True, "code": "VALID"})
