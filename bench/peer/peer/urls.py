from django.urls import path

from peer.views import Ping

urlpatterns = [path("api/ping", Ping.as_view())]
